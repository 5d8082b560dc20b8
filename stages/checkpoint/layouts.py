"""Key layouts of the cascade networks, and the one map between them.

Stage B/C files come in three key layouts; the pack adds no fourth:
- original:  the released files (`modules/stage_{b,c}.py`): each attention is an `nn.MultiheadAttention`,
             `...attention.attn.in_proj_weight` [3c, c] / `in_proj_bias` [3c] hold q, k and v packed
             (rows 0:c, c:2c, 2c:3c), then `...attention.attn.out_proj.*`.
- host, pack: the host's `StageB`/`StageC` and ours: the same keys with the packed projection split into
             `...attention.attn.to_q / to_k / to_v .{weight,bias}` (rows 0:c, c:2c, 2c:3c).
- diffusers: `StableCascadeUNet`: `...attention.to_q/to_k/to_v.*`, `...attention.to_out.0.*`, and Stage B's
             `clip_mapper` named `clip_txt_pooled_mapper`.
Every other key, and any key prefix (e.g. "model.diffusion_model."), is the same in all of them. Other
networks (Stage A, EfficientNet, Previewer) keep the released files' keys.

`convert_key` maps one key (LoRA files name the weights they patch with these keys too);
`convert_state_dict` maps a whole state dict lazily. For the checkpoint loaders a conversion is a
*key map* {pack key: (source key, third or None)}, built from key names alone and applied to tensors
(split with `chunk`, a view: nothing is copied, so memory-mapped inputs stay on disk) or to shapes (so
a safetensors header can be converted before any weight is read).
"""
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch

LAYOUTS = ("original", "host", "diffusers", "pack")
_PACKED_LAYOUT = "original"  # the only layout that packs q/k/v into one projection
_QKV = ("to_q", "to_k", "to_v")
_PACKED_KEY = re.compile(r"(^|.*\.)attention\.attn\.in_proj_(weight|bias)$")
_SPLIT_KEY = re.compile(r"(^|.*\.)attention\.attn\.(to_q|to_k|to_v)\.(weight|bias)$")

# Prefixes of ComfyUI's bundled checkpoints (comfyui_checkpoints/stable_cascade_stage_{b,c}.safetensors).
BUNDLE_PREFIXES = {
    "model.diffusion_model.": "unet",
    "vae.": "vae",
    "text_encoder.": "text_encoder",
    "clip_l_vision.": "clip_vision",
}
# Inside a Stage C bundle's `vae.`: the host's StageC_coder keeps effnet and previewer side by side.
CODER_PREFIXES = {"encoder.": "effnet", "previewer.": "previewer"}


class KeyPart(NamedTuple):
    """One key of the target layout. `third` is None for a plain rename; otherwise exactly one side
    packs q/k/v and the split tensor is rows [third*c, (third+1)*c) of the packed one."""
    key: str
    third: int | None = None


def convert_key(key, source, target, stage=None):
    """The keys that `key` of a Stage B/C ('stage_b'/'stage_c'; None when unknown: Stage B's diffusers
    rename is then left out) becomes in layout `target`, as a list of KeyPart:
    one for a rename, three (thirds 0, 1, 2) when a packed q/k/v is split, and one with its third
    when a split projection is one third of a packed key."""
    for layout in (source, target):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown key layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if _as_pack(source) == _as_pack(target):
        return [KeyPart(key)]
    parts = []
    for pack_key, split_third in _to_pack(key, source, stage):
        target_key, join_third = _from_pack(pack_key, target, stage)
        parts.append(KeyPart(target_key, split_third if split_third is not None else join_third))
    return parts


def _as_pack(layout):
    return "pack" if layout == "host" else layout


def _to_pack(key, layout, stage):
    if layout == "original":
        match = _PACKED_KEY.match(key)
        if match:
            base, param = match.group(1), match.group(2)
            return [KeyPart(f"{base}attention.attn.{name}.{param}", third) for third, name in enumerate(_QKV)]
    elif layout == "diffusers":
        for name in _QKV:
            key = key.replace(f".attention.{name}.", f".attention.attn.{name}.")
        key = key.replace(".attention.to_out.0.", ".attention.attn.out_proj.")
        if stage == "stage_b" and key.startswith("clip_txt_pooled_mapper."):
            key = "clip_mapper." + key.removeprefix("clip_txt_pooled_mapper.")
    return [KeyPart(key)]


def _from_pack(key, layout, stage):
    if layout == "original":
        match = _SPLIT_KEY.match(key)
        if match:
            base, name, param = match.groups()
            return KeyPart(f"{base}attention.attn.in_proj_{param}", _QKV.index(name))
    elif layout == "diffusers":
        for name in _QKV:
            key = key.replace(f".attention.attn.{name}.", f".attention.{name}.")
        key = key.replace(".attention.attn.out_proj.", ".attention.to_out.0.")
        if stage == "stage_b" and key.startswith("clip_mapper."):
            key = "clip_txt_pooled_mapper." + key.removeprefix("clip_mapper.")
    return KeyPart(key)


def unet_layout(keys):
    """'original' (MultiheadAttention in_proj), 'host' (to_q/to_k/to_v) or 'diffusers' for a Stage B/C."""
    keys = list(keys)
    if any(_PACKED_KEY.match(k) for k in keys):
        return "original"
    if any(_SPLIT_KEY.match(k) for k in keys):
        return "host"
    if any(".attention.to_q." in k for k in keys):
        return "diffusers"
    # No attention at all: only diffusers' Stage B renames something else.
    if "clip_txt_pooled_mapper.weight" in keys and "clip_txt_mapper.weight" not in keys:
        return "diffusers"
    return "original"


# --- Whole state dicts ------------------------------------------------------------------------------

class ConvertedStateDict(Mapping):
    """A read-only state dict whose values are computed from a source state dict on access."""

    def __init__(self, recipes):
        self._recipes = recipes  # key -> zero-argument function giving the tensor

    def __getitem__(self, key):
        return self._recipes[key]()

    def __iter__(self):
        return iter(self._recipes)

    def __len__(self):
        return len(self._recipes)

    def __contains__(self, key):
        return key in self._recipes


def convert_state_dict(state_dict, source, target, stage=None):
    """A Stage B/C state dict in layout `target`, read-only, each value made when it is read: a split
    third is a view, a packed projection is joined then. So a large state dict is never duplicated
    whole, and a memory-mapped one stays on disk. KeyError names a projection a join lacks."""
    splits, joins = {}, {}
    for key in state_dict:
        for target_key, third in convert_key(key, source, target, stage):
            if third is not None and target == _PACKED_LAYOUT:
                joins.setdefault(target_key, {})[third] = key
            else:
                splits[target_key] = (key, third)
    recipes = {target_key: (lambda key=key, third=third: _third(state_dict[key], third))
               for target_key, (key, third) in splits.items()}
    for packed_key, thirds in joins.items():
        if len(thirds) != 3:
            missing = [name for third, name in enumerate(_QKV) if third not in thirds]
            raise KeyError(f"cannot build {packed_key!r}: the state dict has {sorted(thirds.values())} but lacks {missing}")
        source_keys = [thirds[third] for third in range(3)]
        recipes[packed_key] = lambda source_keys=source_keys: torch.cat([state_dict[k] for k in source_keys], dim=0)
    return ConvertedStateDict(recipes)


# --- Key maps for the checkpoint loaders ------------------------------------------------------------

def split_by_prefix(keys, prefixes):
    """{part name: prefix} for each prefix that some key starts with."""
    return {part: prefix for prefix, part in prefixes.items() if any(k.startswith(prefix) for k in keys)}


def unet_key_map(keys, layout, stage):
    """{pack key: (source key, third)} for a Stage B/C ('stage_b'/'stage_c') in `layout`."""
    return {target: (key, third) for key in keys for target, third in convert_key(key, layout, "pack", stage)}


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
