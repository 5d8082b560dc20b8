"""Writing a converted LoRA back out, for other tools (ComfyUI keys) or for the original code.

    tensors = to_comfyui_keys(lora)                   # lora_prior_unet_* / lora_prior_te_* (+ .alpha)
    tensors = to_original_keys(lora, stage_c_shapes)   # weights.N.lora_down/up + embeddings.*
    save_lora(path, tensors)

Both keep the LoRA's values: the effective delta scale*up@down of every weight is unchanged.
"""
import torch

from ..stages.checkpoint.layouts import convert_key
from . import structure
from .errors import LoraError

COMFYUI_UNET_PREFIX = "lora_prior_unet_"
COMFYUI_TE_PREFIX = "lora_prior_te_"
_TE_PREFIXES = ("lora_prior_te_", "lora_te1_", "lora_te_")


def to_comfyui_keys(lora):
    """{key: tensor} in ComfyUI's Stage C format. Learned tokens are not part of it (the host keeps
    token embeddings in separate files); they are left out and `lora.tokens` still holds them."""
    tensors = {}

    def put(name, low_rank):
        tensors[f"{name}.lora_up.weight"] = low_rank.up.contiguous()
        tensors[f"{name}.lora_down.weight"] = low_rank.down.contiguous()
        alpha = low_rank.rank if low_rank.alpha is None else low_rank.alpha  # alpha/rank == the scale
        tensors[f"{name}.alpha"] = torch.tensor(float(alpha))

    for key, low_rank in lora.unet.items():
        put(COMFYUI_UNET_PREFIX + key.removesuffix(".weight").replace(".", "_"), low_rank)
    for name, low_rank in lora.text_encoder.items():
        prefix = next(p for p in _TE_PREFIXES if name.startswith(p))
        put(COMFYUI_TE_PREFIX + name[len(prefix):], low_rank)
    return tensors


def to_original_keys(lora, stage_c_shapes):
    """{key: tensor} in the original training format for the Stage C with these pack-layout shapes.

    The original keeps one LoRA per attention projection, all of one rank R with scale 1/R, and
    q/k/v share one [3c, R] up and [R, c] down. Separate q/k/v LoRAs become one of rank r_q+r_k+r_v
    (block-diagonal up); every weight is padded with zero ranks to the largest, which changes no delta.
    """
    if lora.text_encoder:
        raise LoraError("the original format has no text encoder LoRA; this LoRA has "
                        f"{len(lora.text_encoder)} text encoder weights (save it with ComfyUI keys instead).")
    order = structure.original_lora_order(stage_c_shapes)
    attention_keys = {prefix + name + ".weight" for _, prefix in order for name in ("to_q", "to_k", "to_v", "out_proj")}
    others = sorted(set(lora.unet) - attention_keys)
    if others:
        raise LoraError(f"the original format holds attention projections only; this LoRA also patches {others[:3]}"
                        f"{' ...' if len(others) > 3 else ''} (save it with ComfyUI keys instead).")

    pairs = []
    for part, prefix in order:
        if part == "out_proj":
            pairs.append(_scaled_pair([lora.unet.get(prefix + "out_proj.weight")], [stage_c_shapes[prefix + "out_proj.weight"]]))
        else:
            keys = packed_thirds(prefix)
            pairs.append(_scaled_pair([lora.unet.get(k) for k in keys], [stage_c_shapes[k] for k in keys]))
    rank = max([down.shape[0] for _, down in pairs] + [1])
    tensors = {}
    for n, (up, down) in enumerate(pairs):
        extra = rank - down.shape[0]
        up = torch.cat([up * rank, up.new_zeros(up.shape[0], extra)], 1) if rank != 1 else up
        tensors[f"weights.{n}.lora_down"] = torch.cat([down, down.new_zeros(extra, down.shape[1])]).contiguous()
        tensors[f"weights.{n}.lora_up"] = up.contiguous()
    if lora.tokens is not None:
        tensors["embeddings.embeddings"] = lora.tokens.rows.contiguous()
        tensors["embeddings.indices"] = torch.tensor(lora.tokens.indices, dtype=torch.int64)
    return tensors


def packed_thirds(prefix):
    """The pack keys of the rows 0:c, c:2c, 2c:3c of `<prefix>in_proj_weight` (the loaders' key map)."""
    parts = convert_key(prefix + "in_proj_weight", "original", "pack", "stage_c")
    return [part.key for part in sorted(parts, key=lambda part: part.third)]


def _scaled_pair(low_ranks, weight_shapes):
    """(up with its scale folded in [sum out, r], down [r, in]) stacking the given weights' rows."""
    present = [lr for lr in low_ranks if lr is not None]
    dtype = present[0].up.dtype if present else torch.float32
    in_width = weight_shapes[0][1]
    if present and len(present) == len(low_ranks) and all(torch.equal(lr.down, present[0].down) and lr.scale == present[0].scale for lr in present):
        # q, k, v with one shared down (the original layout itself): keep it shared.
        up = torch.cat([lr.up.flatten(1) for lr in present])
        return up * present[0].scale, present[0].down.flatten(1)
    ups, downs = [], []
    for low_rank, shape in zip(low_ranks, weight_shapes):
        if low_rank is None:
            ups.append(torch.zeros(shape[0], 0, dtype=dtype))
            continue
        ups.append(low_rank.up.flatten(1).to(dtype) * low_rank.scale)
        downs.append(low_rank.down.flatten(1).to(dtype))
    down = torch.cat(downs) if downs else torch.zeros(0, in_width, dtype=dtype)
    up = torch.zeros(sum(u.shape[0] for u in ups), down.shape[0], dtype=dtype)
    row = col = 0
    for u in ups:
        up[row: row + u.shape[0], col: col + u.shape[1]] = u
        row, col = row + u.shape[0], col + u.shape[1]
    return up, down


def save_lora(path, tensors, metadata=None):
    """Writes {key: tensor} as .safetensors (contiguous CPU copies)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
