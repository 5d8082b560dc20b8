"""Converting Stage B/C state dicts between the ORIGINAL checkpoint layout and the PACK layout.

The released checkpoints store each attention as `nn.MultiheadAttention`:
    <prefix>attention.attn.in_proj_weight [3c, c], ...in_proj_bias [3c], ...out_proj.{weight,bias}
Our modules (like the host's) use separate projections:
    <prefix>attention.attn.to_q / to_k / to_v / out_proj .{weight,bias}
q, k, v are rows [0:c], [c:2c], [2c:3c] of the packed projection. `out_proj` has the same name in both,
and every other key is untouched. Any key prefix (e.g. "model.diffusion_model.") is kept.

original -> pack gives a dict of views of the input (no copy; fine for memory-mapped safetensors);
pack -> original returns a read-only mapping that joins the three projections of one key only when it
is read, so a large state dict is never duplicated whole.
"""
from collections.abc import Mapping

import torch

PACKED_SUFFIX = "attention.attn.in_proj_"  # + "weight" / "bias"
SPLIT_SUFFIX = "attention.attn."
PROJECTIONS = ("to_q", "to_k", "to_v")


def _packed_key_parts(key):
    """'...attention.attn.in_proj_weight' -> ('...attention.attn.', 'weight'); None for any other key."""
    base, sep, param = key.rpartition(PACKED_SUFFIX)
    if sep and param in ("weight", "bias"):
        return base + SPLIT_SUFFIX, param
    return None


def _split_key_parts(key):
    """'...attention.attn.to_k.bias' -> ('...attention.attn.', 'to_k', 'bias'); None for any other key."""
    head, _, param = key.rpartition(".")
    base, _, projection = head.rpartition(".")
    if projection in PROJECTIONS and param in ("weight", "bias") and (base + ".").endswith(SPLIT_SUFFIX):
        return base + ".", projection, param
    return None


def is_original_layout(keys):
    """True when any key is a packed `nn.MultiheadAttention` projection (`...attention.attn.in_proj_weight`)."""
    return any(_packed_key_parts(key) is not None for key in keys)


def is_pack_layout(keys):
    """True when any key is a split attention projection (`...attention.attn.to_q.weight`)."""
    return any(_split_key_parts(key) is not None for key in keys)


class ConvertedStateDict(Mapping):
    """A read-only state dict whose values are computed from a source state dict on access."""

    def __init__(self, source, recipes):
        self._source = source
        self._recipes = recipes  # new key -> zero-argument function giving the tensor

    def __getitem__(self, key):
        return self._recipes[key]()

    def __iter__(self):
        return iter(self._recipes)

    def __len__(self):
        return len(self._recipes)

    def __contains__(self, key):
        return key in self._recipes


def original_to_pack(state_dict):
    """Original layout -> pack layout: every packed q/k/v projection split into views (no copy).

    The same key map the checkpoint loaders use (stages/checkpoint/layouts.py), applied to tensors.
    """
    from .checkpoint.layouts import apply_key_map, unet_key_map

    return apply_key_map(state_dict, unet_key_map(state_dict.keys(), "original", stage=None))


def pack_to_original(state_dict):
    """Pack layout -> original layout: join to_q/to_k/to_v into one packed projection per attention."""
    recipes = {}
    for key in state_dict:
        parts = _split_key_parts(key)
        if parts is None:
            recipes[key] = lambda key=key: state_dict[key]
            continue
        base, projection, param = parts
        packed_key = f"{base}in_proj_{param}"
        if packed_key in recipes:
            continue
        split_keys = [f"{base}{name}.{param}" for name in PROJECTIONS]
        missing = [k for k in split_keys if k not in state_dict]
        if missing:
            raise KeyError(f"cannot build {packed_key!r}: the state dict has {key!r} but lacks {missing}")
        recipes[packed_key] = lambda split_keys=split_keys: torch.cat([state_dict[k] for k in split_keys], dim=0)
    return ConvertedStateDict(state_dict, recipes)
