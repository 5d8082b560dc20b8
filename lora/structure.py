"""Stage C as a LoRA sees it: its weights, their shapes and the original training code's order.

Everything works on a pack-layout {key: shape} dict (attention split into to_q/to_k/to_v, the host's
names), either the model's own or that of a released variant built on the meta device, so a tiny
test model and the 3.6B release take the same path.
"""
import functools
import re

from ..stages.checkpoint.layouts import convert_key
from ..stages.variants import build_released

# What people call the released variants (messages).
VARIANT_NAMES = {"big": "Stage C 3.6B", "lite": "Stage C lite 1B"}

_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.(\d+)\.")


@functools.lru_cache(maxsize=None)
def released_shapes(name):
    """Pack-layout {key: shape} of a released network, e.g. 'stage_c_big', 'stage_b_lite' (no memory used)."""
    network = build_released(name, device="meta")
    return {key: tuple(tensor.shape) for key, tensor in network.state_dict().items()}


def attention_prefixes(shapes):
    """'<block>.attention.attn.' of every attention block in module order.

    Module order is registration order: all down blocks (level 0, level 1, ...), then the up blocks
    as stored (up_blocks.0 is the low-resolution level); indices compare as numbers.
    """
    suffix = "to_q.weight"
    prefixes = {key[: -len(suffix)] for key in shapes if key.endswith(".attention.attn." + suffix)}

    def module_order(prefix):
        side, level, index = _BLOCK.match(prefix).groups()
        return side == "up", int(level), int(index)

    return sorted(prefixes, key=module_order)


def original_lora_order(shapes):
    """[(part, attention prefix)] in the order of the original `weights.N` list.

    Per attention block `out_proj` comes first and the packed `in_proj` (q, k, v) second: the
    MultiheadAttention's parametrization is registered after its `out_proj` child (official.md §7.4).
    """
    return [(part, prefix) for prefix in attention_prefixes(shapes) for part in ("out_proj", "in_proj")]


def original_lora_shapes(shapes):
    """[(lora_down shape without rank, lora_up rows)] per `weights.N`: (in, out) of each LoRA'd weight."""
    result = []
    for part, prefix in original_lora_order(shapes):
        out_rows, in_width = shapes[prefix + "out_proj.weight"] if part == "out_proj" else shapes[prefix + "to_q.weight"]
        result.append((in_width, out_rows if part == "out_proj" else 3 * out_rows))
    return result


def module_names(shapes, layout="pack"):
    """{'down_blocks_0_2_attention_attn_to_q': 'down_blocks.0.2.attention.attn.to_q.weight', ...}.

    The underscore names LoRA trainers use (kohya, ComfyUI, OneTrainer) for every weight of a Linear
    or Conv2d, as that weight is named in `layout` ('pack' = the host's names; 'diffusers' for
    OneTrainer's older files), mapped to the pack key by the checkpoint loaders' key map.
    """
    names = {}
    for key, shape in shapes.items():
        if key.endswith(".weight") and len(shape) in (2, 4):
            for part in convert_key(key, "pack", layout, "stage_c"):
                if part.third is None:
                    names[part.key[: -len(".weight")].replace(".", "_")] = key
    return names


def describe_stage_c(shapes):
    """'Stage C 3.6B', 'Stage C lite 1B' or 'a custom Stage C (2 attention blocks of width 32)'."""
    for variant in ("big", "lite"):
        if _same_shapes(shapes, released_shapes(f"stage_c_{variant}")):
            return VARIANT_NAMES[variant]
    prefixes = attention_prefixes(shapes)
    widths = sorted({shapes[p + "to_q.weight"][0] for p in prefixes})
    return f"a custom Stage C ({len(prefixes)} attention blocks of width {'/'.join(map(str, widths)) or '?'})"


def _same_shapes(shapes, reference):
    return len(shapes) == len(reference) and all(shapes.get(k) == v for k, v in reference.items())
