"""Key layouts of the cascade networks, and their conversion to the pack layout.

Pack layout of Stage B/C = the host's `StageB`/`StageC`: the original keys with every attention
`in_proj_weight`/`in_proj_bias` split into `to_q`, `to_k`, `to_v` (rows 0:c, c:2c, 2c:3c).
Other networks keep the released files' keys.

A conversion is a *key map* {pack key: (source key, third or None)}, built from key names alone
and applied to tensors (split with `chunk`, a view: nothing is copied, so memory-mapped inputs stay
on disk) or to shapes (so a safetensors header can be converted before any weight is read).
"""
import torch

# Prefixes of ComfyUI's bundled checkpoints (comfyui_checkpoints/stable_cascade_stage_{b,c}.safetensors).
BUNDLE_PREFIXES = {
    "model.diffusion_model.": "unet",
    "vae.": "vae",
    "text_encoder.": "text_encoder",
    "clip_l_vision.": "clip_vision",
}
# Inside a Stage C bundle's `vae.`: the host's StageC_coder keeps effnet and previewer side by side.
CODER_PREFIXES = {"encoder.": "effnet", "previewer.": "previewer"}

_QKV = ("to_q", "to_k", "to_v")


def split_by_prefix(keys, prefixes):
    """{part name: prefix} for each prefix that some key starts with."""
    return {part: prefix for prefix, part in prefixes.items() if any(k.startswith(prefix) for k in keys)}


def unet_layout(keys):
    """'original' (MultiheadAttention in_proj), 'host' (to_q/to_k/to_v) or 'diffusers' for a Stage B/C."""
    keys = list(keys)
    if any(".attention.attn.in_proj_weight" in k for k in keys):
        return "original"
    if any(".attention.attn.to_q." in k for k in keys):
        return "host"
    if any(".attention.to_q." in k for k in keys):
        return "diffusers"
    # No attention at all: only diffusers' Stage B renames something else.
    if "clip_txt_pooled_mapper.weight" in keys and "clip_txt_mapper.weight" not in keys:
        return "diffusers"
    return "original"


def _original_to_pack(key):
    for suffix, param in ((".attention.attn.in_proj_weight", "weight"), (".attention.attn.in_proj_bias", "bias")):
        if key.endswith(suffix):
            base = key[: -len(suffix)] + ".attention.attn."
            return [(f"{base}{name}.{param}", third) for third, name in enumerate(_QKV)]
    return [(key, None)]


def _diffusers_to_pack(key, stage):
    for name in _QKV:
        key = key.replace(f".attention.{name}.", f".attention.attn.{name}.")
    key = key.replace(".attention.to_out.0.", ".attention.attn.out_proj.")
    if stage == "stage_b" and key.startswith("clip_txt_pooled_mapper."):
        key = "clip_mapper." + key.removeprefix("clip_txt_pooled_mapper.")
    return [(key, None)]


def unet_key_map(keys, layout, stage):
    """{pack key: (source key, third)} for a Stage B/C ('stage_b'/'stage_c') in `layout`."""
    key_map = {}
    for key in keys:
        if layout == "original":
            targets = _original_to_pack(key)
        elif layout == "diffusers":
            targets = _diffusers_to_pack(key, stage)
        else:
            targets = [(key, None)]
        for target, third in targets:
            key_map[target] = (key, third)
    return key_map


def prefix_key_map(keys, prefix):
    """{key without prefix: (key, None)} for the keys under `prefix`."""
    return {key[len(prefix):]: (key, None) for key in keys if key.startswith(prefix)}


def compose(outer, inner):
    """Key map that first applies `outer` (e.g. a prefix strip), then `inner` (a layout conversion)."""
    composed = {}
    for target, (middle, third) in inner.items():
        source, outer_third = outer[middle]
        assert outer_third is None, "only the last step may split"
        composed[target] = (source, third)
    return composed


def apply_key_map(values, key_map):
    """New dict of the same tensors (or shapes) under the pack keys; split thirds are views."""
    return {target: _third(values[source], third) for target, (source, third) in key_map.items()}


def _third(value, third):
    if third is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.chunk(3, dim=0)[third]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):  # (dtype, shape)
        return value[0], _third(tuple(value[1]), third)
    shape = tuple(value)
    return (shape[0] // 3, *shape[1:])
