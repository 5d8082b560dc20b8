"""Which of the host's model patches the GDF samplers apply, and how.

The samplers call the network themselves, so the GDF numbers stay exact; that bypasses the host's
`apply_model` plumbing (sigma-space inputs, denoised outputs, its CFG). Each kind of host patch is
therefore either applied here or refused by name, never silently dropped:

- weight patches (LoRA, `add_patches`) and object patches: the host applies them when it loads the
  model, so the network the sampler calls already carries them;
- the host's torch.compile wrapper (the TorchCompileModel node): it runs around every network
  call, and swaps the compiled network in exactly as it does for KSampler;
- everything written for the host's sigma/denoised convention or its CFG (other wrappers,
  `model_function_wrapper`, attention patches, cfg functions) and a `model_sampling` patch whose
  shift disagrees with the sampler's own: refused, naming the patch and what to do instead.
"""
import comfy.patcher_extension as patcher_extension
from comfy.patcher_extension import WrappersMP

try:  # where the host keeps TorchCompileModel's wrapper key (0.3.75: comfy_api.torch_helpers)
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY
except ImportError:  # pragma: no cover - older hosts
    COMPILE_KEY = "torch.compile"

# Wrappers whose only effect is on which module runs: exact under GDF, applied around each call.
NETWORK_SWAPPING_WRAPPERS = {(WrappersMP.APPLY_MODEL, COMPILE_KEY)}

CFG_FUNCTIONS = ("sampler_cfg_function", "sampler_post_cfg_function", "sampler_pre_cfg_function")


class UnsupportedModelPatch(ValueError):
    """A patch on the MODEL that the GDF sampler cannot apply exactly."""


def network_caller(model_patcher, node_name, shift):
    """call(fn, *args) that runs fn (a network call) inside the patches this sampler honours.

    Raises UnsupportedModelPatch for any patch it cannot apply, before anything is sampled.
    """
    problems = unsupported_patches(model_patcher, shift)
    if problems:
        raise UnsupportedModelPatch(
            f"{node_name}: the MODEL carries patches the GDF sampler cannot apply exactly: "
            + "; ".join(problems)
            + ". Weight patches (LoRA) and TorchCompileModel work; for the others use the host's KSampler "
              "with ModelSamplingStableCascade, or remove the node that added them."
        )
    wrappers = [wrapper for kind, key, wrapper in _all_wrappers(model_patcher)
                if (kind, key) in NETWORK_SWAPPING_WRAPPERS]
    host_model = model_patcher.model
    if not wrappers:
        return lambda fn, *args, **kwargs: fn(*args, **kwargs)

    def call(fn, *args, **kwargs):
        executor = patcher_extension.WrapperExecutor.new_class_executor(
            lambda *a, **k: fn(*a, **k), host_model, wrappers)
        return executor.execute(*args, **kwargs)

    return call


def unsupported_patches(model_patcher, shift):
    """Human-readable descriptions of each patch on this MODEL that the GDF sampler cannot apply."""
    problems = []
    for kind, key, _ in _all_wrappers(model_patcher):
        if (kind, key) not in NETWORK_SWAPPING_WRAPPERS:
            problems.append(f"a '{kind}' wrapper" + (f" ('{key}')" if key else ""))
    options = model_patcher.model_options
    if options.get("model_function_wrapper") is not None:
        problems.append("a model_function_wrapper (it works on the host's sigma/denoised values)")
    for name in CFG_FUNCTIONS:
        if options.get(name):
            problems.append(f"a {name} (the GDF sampler applies the original CFG with its cfg_rho rescale)")
    transformer_options = options.get("transformer_options", {})
    for group in ("patches", "patches_replace"):
        names = sorted(name for name, entries in transformer_options.get(group, {}).items() if entries)
        if names:
            problems.append(f"attention {group} ({', '.join(names)})")
    patched_sampling = model_patcher.object_patches.get("model_sampling")
    patched_shift = getattr(patched_sampling, "shift", None)
    if patched_shift is not None and float(patched_shift) != float(shift):
        problems.append(
            f"a model_sampling patch with shift {patched_shift} (e.g. ModelSamplingStableCascade) while the "
            f"sampler's 'shift' input is {shift}: set the sampler's shift to {patched_shift} and remove that node")
    return problems


def _all_wrappers(model_patcher):
    """(wrapper type, key, wrapper) on the ModelPatcher and in its transformer_options."""
    found = []
    for source in (model_patcher.wrappers,
                   model_patcher.model_options.get("transformer_options", {}).get("wrappers", {})):
        for kind, by_key in source.items():
            for key, wrappers in by_key.items():
                found.extend((kind, key, wrapper) for wrapper in wrappers)
    return found
