"""Constructor kwargs of each network, read from the shapes of its (pack-layout) state dict.

Widths, level counts, the letters of each level (C ResBlock, T TimestepBlock, A AttnBlock,
F FeedForward), block counts, repeats, conditioning widths and patch size all follow from key names
and shapes, so a tiny test model and a released 3.6B file take the same path. What a file cannot
tell (dropout, nhead of a level without attention, self_attn, switch_level) is filled by the rules
the released configs follow; when the structure equals a released model the released values are
used, so a released file gets back its released kwargs exactly.
"""
import copy
import re

from ..variants import RELEASED_CONFIGS
from .errors import CheckpointError

HEAD_DIM = 64  # every released model (official.md §1): nhead = width / 64
KNOWN_T_CONDS = ("sca", "crp")  # their order fixes how the r embedding is chunked; headers sort keys

# Released configs by variant, e.g. RELEASED["stage_b"]["lite"].
RELEASED = {
    kind: {variant: RELEASED_CONFIGS[f"{kind}_{variant}"][1] for variant in ("big", "lite")}
    for kind in ("stage_c", "stage_b")
}
# Not stored in a file, and without effect on the weights' shapes.
_UNSTORED = ("nhead", "dropout", "self_attn", "switch_level")

# Latent channels of the cascade: Stage C works on effnet latents, Stage B on Stage A latents.
# A file stores only c_in * patch_size**2, so these pin down the patch size.
_LATENT_CHANNELS = {"stage_c": 16, "stage_b": 4}


class _KeyShape(tuple):
    """A shape that knows its key: reading a dimension it lacks is a CheckpointError naming both."""

    def __new__(cls, key, shape):
        instance = super().__new__(cls, shape)
        instance.key = key
        return instance

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except IndexError:
            raise CheckpointError(
                f"the tensor '{self.key}' has shape {list(self)}, but a {self.key.rsplit('.', 1)[-1]} there has more "
                "dimensions"
            ) from None


class _ShapeTable(dict):
    """{key: shape} where a key the inference needs but the file lacks is a CheckpointError naming it,
    not a KeyError (a malformed or cut-down file must never escape as a bare KeyError)."""

    def __init__(self, shapes, kind):
        super().__init__((key, _KeyShape(key, shape)) for key, shape in shapes.items())
        self.kind = kind

    def __missing__(self, key):
        raise CheckpointError(f"the tensor '{key}', which every {self.kind.replace('_', ' ')} file has, is missing")


def infer_config(kind, shapes):
    """(constructor kwargs, variant) for `kind` from {pack key: shape}; variant 'big'/'lite'/'custom' or None."""
    shapes = _ShapeTable(shapes, kind)
    if kind in ("stage_c", "stage_b"):
        return _infer_unet(kind, shapes)
    infer = {"stage_a": _infer_stage_a, "effnet": _infer_effnet, "previewer": _infer_previewer}.get(kind)
    return (infer(shapes), None) if infer else (None, None)


# -- Stage B / Stage C ----------------------------------------------------------------------------

def _indices(shapes, prefix):
    """Sorted distinct integers N of keys `prefix.N.…`."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in shapes if (m := pattern.match(k))})


def _block_letter(shapes, prefix):
    if f"{prefix}.depthwise.weight" in shapes:
        return "C"
    if f"{prefix}.mapper.weight" in shapes:
        return "T"
    if f"{prefix}.kv_mapper.1.weight" in shapes:
        return "A"
    if f"{prefix}.channelwise.0.weight" in shapes:
        return "F"
    raise CheckpointError(f"unrecognised block {prefix} (keys: {sorted(k for k in shapes if k.startswith(prefix + '.'))[:4]})")


def _block_width(shapes, prefix, letter):
    if letter == "C":
        return shapes[f"{prefix}.depthwise.weight"][0]
    if letter == "T":
        return shapes[f"{prefix}.mapper.weight"][0] // 2
    if letter == "A":
        return shapes[f"{prefix}.kv_mapper.1.weight"][0]
    return shapes[f"{prefix}.channelwise.4.weight"][0]


def _repeating_unit(letters):
    """('CTA', 8) from 'CTA' * 8: the shortest unit whose repetition gives the level's modules."""
    for length in range(1, len(letters) + 1):
        if len(letters) % length == 0 and letters[:length] * (len(letters) // length) == letters:
            return letters[:length], len(letters) // length
    return letters, 0


def _level(shapes, prefix):
    """(letters, count, width) of the ModuleList `prefix`, e.g. ('CTA', 24, 2048)."""
    modules = _indices(shapes, prefix)
    if modules != list(range(len(modules))):
        raise CheckpointError(f"{prefix} has gaps in its block numbering: {modules}")
    letters = "".join(_block_letter(shapes, f"{prefix}.{j}") for j in modules)
    unit, count = _repeating_unit(letters)
    width = _block_width(shapes, f"{prefix}.0", letters[0]) if letters else None
    return unit, count, width


def _infer_unet(kind, shapes):
    levels = len(_indices(shapes, "down_blocks"))
    if levels == 0 or len(_indices(shapes, "up_blocks")) != levels:
        raise CheckpointError(f"the down and up paths disagree on the number of levels ({levels} vs {len(_indices(shapes, 'up_blocks'))})")
    down = [_level(shapes, f"down_blocks.{i}") for i in range(levels)]
    up_by_position = [_level(shapes, f"up_blocks.{k}") for k in range(levels)]  # position k = level levels-1-k
    level_config, c_hidden = [], []
    for i in range(levels):
        unit, _, width = down[i] if down[i][1] else up_by_position[levels - 1 - i]
        level_config.append(unit)
        c_hidden.append(width)
    blocks = [[count for _, count, _ in down], [count for _, count, _ in up_by_position]]
    block_repeat = [
        [len(_indices(shapes, f"down_repeat_mappers.{i}")) + 1 for i in range(levels)],
        [len(_indices(shapes, f"up_repeat_mappers.{k}")) + 1 for k in range(levels)],
    ]
    has_attention = ["A" in unit for unit in level_config]

    t_block = _first_block(shapes, levels, "T")
    c_r = shapes[f"{t_block}.mapper.weight"][1] if t_block else 64
    extra = {m.group(1) for k in shapes if t_block and (m := re.fullmatch(re.escape(t_block) + r"\.mapper_(\w+)\.weight", k))}
    t_conds = [c for c in KNOWN_T_CONDS if c in extra] + sorted(extra - set(KNOWN_T_CONDS))

    a_block = _first_block(shapes, levels, "A")
    embedding_in = shapes["embedding.1.weight"][1]
    clf_out = shapes["clf.1.weight"][0]
    patch_size, c_in = _patch_and_channels(embedding_in, _LATENT_CHANNELS[kind])
    kernel_size = _kernel_size(shapes, levels)

    config = dict(c_in=c_in, c_out=clf_out // patch_size**2, c_r=c_r, patch_size=patch_size)
    if kind == "stage_c":
        c_cond = shapes["clip_txt_mapper.weight"][0]
        config.update(c_cond=c_cond)
    else:
        c_cond = shapes[f"{a_block}.kv_mapper.1.weight"][1] if a_block else shapes["clip_mapper.weight"][1]
        config.update(c_cond=c_cond)
    config.update(
        c_hidden=c_hidden,
        nhead=[_heads(width) if attention else -1 for width, attention in zip(c_hidden, has_attention)],
        blocks=blocks, block_repeat=block_repeat, level_config=level_config,
    )
    if kind == "stage_c":
        config.update(
            c_clip_text=shapes["clip_txt_mapper.weight"][1],
            c_clip_text_pooled=shapes["clip_txt_pooled_mapper.weight"][1],
            c_clip_img=shapes["clip_img_mapper.weight"][1],
            c_clip_seq=shapes["clip_txt_pooled_mapper.weight"][0] // c_cond,
        )
    else:
        config.update(
            c_clip=shapes["clip_mapper.weight"][1],
            c_clip_seq=shapes["clip_mapper.weight"][0] // c_cond,
            c_effnet=shapes["effnet_mapper.0.weight"][1],
            c_pixels=shapes["pixels_mapper.0.weight"][1],
        )
    config.update(
        kernel_size=kernel_size,
        dropout=[0.1 if attention else 0 for attention in has_attention],  # as the released configs
        self_attn=True,
        t_conds=t_conds,
    )
    if kind == "stage_c":
        config["switch_level"] = [False] * (levels - 1)
    return _match_released(kind, config)


def _heads(width):
    """Head count is not stored: released models use 64-wide heads; other widths get one head."""
    return width // HEAD_DIM if width % HEAD_DIM == 0 else 1


def _first_block(shapes, levels, letter):
    for path in ("down_blocks", "up_blocks"):
        for i in range(levels):
            for j in _indices(shapes, f"{path}.{i}"):
                if _block_letter(shapes, f"{path}.{i}.{j}") == letter:
                    return f"{path}.{i}.{j}"
    return None


def _kernel_size(shapes, levels):
    for i in range(levels):
        for j in _indices(shapes, f"down_blocks.{i}"):
            if f"down_blocks.{i}.{j}.depthwise.weight" in shapes:
                return shapes[f"down_blocks.{i}.{j}.depthwise.weight"][-1]
    return 3


def _patch_and_channels(embedding_in, latent_channels):
    ratio, remainder = divmod(embedding_in, latent_channels)
    patch = round(ratio**0.5) if ratio else 0
    if remainder == 0 and patch >= 1 and patch * patch == ratio:
        return patch, latent_channels
    return 1, embedding_in


def _match_released(kind, config):
    for variant, released in RELEASED[kind].items():
        if all(config[k] == v for k, v in released.items() if k not in _UNSTORED):
            return {**config, **{k: copy.deepcopy(released[k]) for k in _UNSTORED if k in released}}, variant
    return config, "custom"


# -- Stage A, EfficientNet encoder, Previewer -----------------------------------------------------

def _infer_stage_a(shapes):
    down = _indices(shapes, "down_blocks")
    up = _indices(shapes, "up_blocks")
    levels = sum(f"down_blocks.{i}.gammas" in shapes for i in down)
    up_resblocks = sum(f"up_blocks.{i}.gammas" in shapes for i in up)
    codebook = shapes["vquantizer.codebook.weight"]
    return dict(
        levels=levels,
        bottleneck_blocks=up_resblocks - (levels - 1),
        c_hidden=shapes[f"down_blocks.{down[-1]}.0.weight"][1],
        c_latent=codebook[1],
        codebook_size=codebook[0],
        scale_factor=0.43,  # not stored; the value the official pipeline uses (official.md §2)
    )


def _infer_effnet(shapes):
    return dict(c_latent=shapes["mapper.0.weight"][0])


def _infer_previewer(shapes):
    last = max(i for i in _indices(shapes, "blocks") if len(shapes.get(f"blocks.{i}.weight", ())) == 4)
    return dict(
        c_in=shapes["blocks.0.weight"][1],
        c_hidden=shapes["blocks.0.weight"][0],
        c_out=shapes[f"blocks.{last}.weight"][0],
    )
