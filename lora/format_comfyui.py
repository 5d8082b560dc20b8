"""ComfyUI's Stage C keys: `lora_prior_unet_<module>` and `lora_prior_te_<module>` (comfyui-host.md §4.10)."""
from .format_onetrainer import claims as is_onetrainer
from .named_modules import group, load_named


def claims(keys):
    return any(m.startswith(("lora_prior_unet_", "lora_prior_te_")) for m in group(keys)) and not is_onetrainer(keys)


def load(state_dict, target_shapes, source_name="LoRA"):
    if not claims(state_dict):
        return None
    return load_named(state_dict, target_shapes, source_name, "comfyui")
