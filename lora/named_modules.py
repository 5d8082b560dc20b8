"""What the kohya-style formats share: `<prefix><module>.lora_down.weight / .lora_up.weight / .alpha`.

`<module>` is a weight's key with '.' -> '_' (structure.module_names), so the module names of the
Stage C being patched resolve every name; a name they do not resolve means the file is for another
network, and the message says which when it can tell.
"""
import math

from . import structure
from .adapters import LowRank, StageCLora
from .errors import LoraError

PARTS = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
UNET_PREFIXES = ("lora_prior_unet_", "lora_unet_")
TE_PREFIXES = ("lora_prior_te_", "lora_te_", "lora_te1_")


def split_key(key):
    """('lora_prior_unet_down_blocks_0_2_attention_attn_to_q', 'down') or None for any other key."""
    for suffix, part in PARTS.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def group(keys):
    """{module name with prefix: {part: key}} for every LoRA tensor key; other keys are left out."""
    modules = {}
    for key in keys:
        parts = split_key(key)
        if parts:
            modules.setdefault(parts[0], {})[parts[1]] = key
    return modules


def unet_name(module):
    for prefix in UNET_PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix):]
    return None


def is_text_encoder(module):
    return module.startswith(TE_PREFIXES)


def other_network(names):
    """What network underscore module names belong to when it is not Stage C, else None."""
    names = list(names)
    if any(fragment in n for n in names for fragment in ("input_blocks_", "output_blocks_", "middle_block_")):
        return "an SD1.x/SD2.x/SDXL UNet"
    if any("attentions_" in n or "resnets_" in n for n in names):
        return "a diffusers-style SD UNet"
    if any(n.startswith(("double_blocks_", "single_blocks_")) for n in names):
        return "a Flux-style transformer"
    if any(n.startswith(("joint_blocks_", "transformer_blocks_")) for n in names):
        return "a transformer (SD3/DiT-style)"
    for variant in ("big", "lite"):
        stage_b = structure.module_names(structure.released_shapes(f"stage_b_{variant}"))
        if all(n in stage_b for n in names):
            return "Stage B (the decoder; this pack loads LoRAs for Stage C only)"
    return None


def fits(low_rank_shapes, weight_shape):
    """True when up [out, r, (1, 1)] @ down [r, in, (kh, kw)] has the weight's shape."""
    (up, down) = low_rank_shapes
    return (up[0] == weight_shape[0] and up[1] == down[0] and all(d == 1 for d in up[2:])
            and math.prod(down[1:]) == math.prod(weight_shape[1:]))


def trained_for(shapes, unet_names):
    """The released Stage C whose weights every module fits, else a custom description (shapes only)."""
    modules = group(shapes)
    for variant, title in structure.VARIANT_NAMES.items():
        weights = structure.released_shapes(f"stage_c_{variant}")
        known = structure.module_names(weights)
        if unet_names and all(
            name in known and fits((shapes[modules[module]["up"]], shapes[modules[module]["down"]]), weights[known[name]])
            for module, name in unet_names.items()
        ):
            return title
    widths = sorted({shapes[modules[m]["up"]][0] for m, n in unet_names.items() if "attention_attn_to_q" in n})
    return f"a custom Stage C (attention width {'/'.join(map(str, widths)) or 'unknown'})"


def load_named(state_dict, target_shapes, source_name, fmt, rename=lambda name: name):
    """StageCLora from a kohya-style state dict; `rename` maps a format's module names to pack names."""
    modules = group(state_dict)
    for module, parts in modules.items():
        if not {"down", "up"} <= set(parts):
            lacking = ({"down", "up"} - set(parts)).pop()
            raise LoraError(f"{source_name} is corrupt: {module} has no lora_{lacking}.weight.")
    unet_names = {m: rename(unet_name(m)) for m in modules if unet_name(m) is not None}
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    fitted = trained_for(shapes, unet_names)

    known = structure.module_names(target_shapes)
    unknown = [name for name in unet_names.values() if name not in known]
    if unknown:
        other = other_network(unknown)
        if other:
            raise LoraError(f"{source_name} is a LoRA for {other}, not for Stage C: it patches {unknown[0]!r} "
                            f"and {len(unknown) - 1} more modules Stage C does not have.")
        raise LoraError(f"{source_name} patches modules this Stage C does not have ({', '.join(unknown[:3])}"
                        f"{' ...' if len(unknown) > 3 else ''}); the model is {structure.describe_stage_c(target_shapes)}.")

    unet, text_encoder = {}, {}
    for module, parts in modules.items():
        up, down = state_dict[parts["up"]], state_dict[parts["down"]]
        alpha = float(state_dict[parts["alpha"]].item()) if "alpha" in parts else None
        if module in unet_names:
            key = known[unet_names[module]]
            if not fits((tuple(up.shape), tuple(down.shape)), target_shapes[key]):
                raise LoraError(f"{source_name} is a LoRA for {fitted}, but the model is "
                                f"{structure.describe_stage_c(target_shapes)}: {module} has lora_up {list(up.shape)} and "
                                f"lora_down {list(down.shape)}, the model's {key} is {list(target_shapes[key])}.")
            unet[key] = LowRank(up, down, alpha)
        elif is_text_encoder(module):
            text_encoder[module] = LowRank(up, down, alpha)
        else:
            raise LoraError(f"{source_name}: {module} names neither the Stage C (lora_prior_unet_/lora_unet_) nor the "
                            "text encoder (lora_prior_te_/lora_te_).")
    return StageCLora(fmt, fitted, unet=unet, text_encoder=text_encoder)
