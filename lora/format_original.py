"""The original training code's `lora.safetensors` (official.md §7.4).

    weights.N.lora_down [rank, in], weights.N.lora_up [out, rank]   scale 1/rank, no module names
    embeddings.embeddings [n, width], embeddings.indices [n] int64   learned token-embedding deltas

`weights.N` is the N-th LoRA in module order (structure.original_lora_order): per attention block
out_proj.weight, then the packed in_proj_weight, whose rows are q, k, v (split here like the weight).
"""
import re

from ..stages.checkpoint.layouts import convert_key
from . import structure
from .adapters import LowRank, StageCLora, TokenDeltas
from .errors import LoraError

_WEIGHT = re.compile(r"^weights\.(\d+)\.lora_(down|up)$")
TOKEN_KEYS = ("embeddings.embeddings", "embeddings.indices")


def claims(keys):
    return any(_WEIGHT.match(k) for k in keys) or any(k in TOKEN_KEYS for k in keys)


def _pairs(shapes, source_name):
    """{N: (down shape, up shape)}, checked to be a complete list 0..n-1."""
    parts = {}
    for key, shape in shapes.items():
        match = _WEIGHT.match(key)
        if match:
            parts.setdefault(int(match[1]), {})[match[2]] = tuple(shape)
    for n, part in sorted(parts.items()):
        if set(part) != {"down", "up"}:
            lacking = ({"down", "up"} - set(part)).pop()
            raise LoraError(f"{source_name} is corrupt: it has weights.{n} without weights.{n}.lora_{lacking}.")
        down, up = part["down"], part["up"]
        if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
            raise LoraError(f"{source_name} is corrupt: weights.{n} has lora_down {list(down)} and lora_up {list(up)}; "
                            "expected [rank, in] and [out, rank] with the same rank.")
    if parts and sorted(parts) != list(range(len(parts))):
        missing = sorted(set(range(max(parts) + 1)) - set(parts))
        raise LoraError(f"{source_name} is corrupt: the LoRA list has gaps (no weights.{missing[0]}); "
                        "the original format identifies each weight by its position only.")
    return {n: (part["down"], part["up"]) for n, part in parts.items()}


def _signature(pairs):
    return [(down[1], up[0]) for _, (down, up) in sorted(pairs.items())]


def trained_for(shapes, source_name="LoRA"):
    """Which Stage C the weight list fits: 'Stage C 3.6B', 'Stage C lite 1B' or a custom description."""
    signature = _signature(_pairs(shapes, source_name))
    if not signature:
        return "any Stage C (learned tokens only)"
    for variant, name in structure.VARIANT_NAMES.items():
        if signature == structure.original_lora_shapes(structure.released_shapes(f"stage_c_{variant}")):
            return name
    widths = sorted({width for width, _ in signature})
    return f"a custom Stage C ({len(signature) // 2} attention blocks of width {'/'.join(map(str, widths))})"


def load(state_dict, target_shapes, source_name="LoRA"):
    """StageCLora for the Stage C with pack-layout `target_shapes`, or None when not this format."""
    if not claims(state_dict):
        return None
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    pairs = _pairs(shapes, source_name)
    fitted = trained_for(shapes, source_name)
    unet = {}
    if pairs:
        expected = structure.original_lora_shapes(target_shapes)
        if _signature(pairs) != expected:
            raise LoraError(f"{source_name} is an original-format LoRA for {fitted}, but the model is "
                            f"{structure.describe_stage_c(target_shapes)}: its {len(pairs)} weights do not fit "
                            f"the model's {len(expected)} attention projections. Use the LoRA with the Stage C it was trained on.")
        for n, (part, prefix) in enumerate(structure.original_lora_order(target_shapes)):
            down, up = state_dict[f"weights.{n}.lora_down"], state_dict[f"weights.{n}.lora_up"]
            if part == "out_proj":
                unet[prefix + "out_proj.weight"] = LowRank(up, down, alpha=1.0)
            else:  # the packed projection's rows split like the weight's, by the loaders' key map
                for part_key in convert_key(prefix + "in_proj_weight", "original", "pack", "stage_c"):
                    unet[part_key.key] = LowRank(up.chunk(3, dim=0)[part_key.third], down, alpha=1.0)
    return StageCLora("original", fitted, unet=unet, tokens=_token_deltas(state_dict, source_name))


def _token_deltas(state_dict, source_name):
    present = [k for k in TOKEN_KEYS if k in state_dict]
    if not present:
        return None
    if len(present) == 1:
        raise LoraError(f"{source_name} is corrupt: it has {present[0]} but not "
                        f"{[k for k in TOKEN_KEYS if k not in present][0]}.")
    rows, indices = state_dict["embeddings.embeddings"], state_dict["embeddings.indices"]
    if indices.is_floating_point() or indices.dim() != 1 or rows.dim() != 2 or rows.shape[0] != indices.shape[0]:
        raise LoraError(f"{source_name} is corrupt: embeddings.indices {list(indices.shape)} ({indices.dtype}) and "
                        f"embeddings.embeddings {list(rows.shape)} should be n integer token ids and n rows.")
    return TokenDeltas([int(i) for i in indices.tolist()], rows)
