"""kohya sd-scripts' Stable Cascade branch: `lora_unet_<module>` over every Linear and Conv2d of Stage C
(its attention already split into to_q/to_k/to_v/out_proj, like ours) and `lora_te_<module>`."""
from .named_modules import group, load_named


def claims(keys):
    return any(m.startswith(("lora_unet_", "lora_te_", "lora_te1_")) for m in group(keys))


def load(state_dict, target_shapes, source_name="LoRA"):
    if not claims(state_dict):
        return None
    return load_named(state_dict, target_shapes, source_name, "kohya")
