"""Checking combo values ourselves: ComfyUI 0.3.75 does not check a V3 node's combo inputs against
their options (and a validate_inputs that names an input switches the host's checks off anyway)."""


def choice_problems(**inputs):
    """inputs: name=(value, options). A message for each value not among its options, joined; or True."""
    problems = []
    for name, (value, options) in inputs.items():
        if value not in options:
            shown = ", ".join(map(str, options[:8])) + (", ..." if len(options) > 8 else "")
            problems.append(f"{name}: '{value}' is not one of the choices ({shown or 'none available'})")
    return "; ".join(problems) if problems else True
