"""The U-Net-like trunk that Stage B and Stage C share (official.md §1.2).

Levels of blocks named by letters (C = ResBlock, T = TimestepBlock, A = AttnBlock, F = FeedForwardBlock),
run down the levels and back up; the first up-path ResBlock of every level but the deepest takes that
level's down-path output as a skip. The attribute names below are the checkpoint's key prefixes.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttnBlock, FeedForwardBlock, LayerNorm2d, ResBlock, TimestepBlock, noise_level_embedding


class ControlResiduals:
    """ControlNet residuals handed out one per ResBlock call, in execution order (down path, then up path,
    every block_repeat pass counted). Each source is an iterable whose entries may be None (nothing to add);
    several sources add up, and an exhausted source adds nothing."""

    def __init__(self, *sources):
        self._sources = [iter(source) for source in sources if source is not None]

    def add_next(self, x, scale=1.0):
        """x plus the next residuals, times `scale` (the factor a rescaled stream carries, see fp16_rescale)."""
        for source in self._sources:
            residual = next(source, None)
            if residual is not None:
                resized = F.interpolate(residual, size=x.shape[-2:], mode="bilinear", align_corners=True)
                x = x + (resized * scale).to(x.dtype)
        return x


class PlainStream:
    """How the trunk moves its residual stream through blocks and level changes: as it is.

    fp16_rescale.RescaledStream is the other kind: it carries the stream times a per-block factor so
    that fp16 does not overflow, and overrides these four steps.
    """

    def block(self, trunk, block, x, r_embed, cond_tokens, control, skip=None):
        if isinstance(block, ResBlock):
            return block(control.add_next(x), skip)
        return trunk._run_block(block, x, r_embed, cond_tokens)

    def repeat_mapper(self, mapper, x):
        return mapper(x)

    def level_change(self, scaler, x):
        return scaler(x)

    def level_output(self, x):
        """The stream at the end of a down level, as the up path's skip will take it."""
        return x


def _per_level(value, levels):
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


class CascadeUNet(nn.Module):
    """Base of StageB and StageC: builds and runs the trunk. Subclasses register their conditioning
    modules first, then call `_build_trunk` (which keeps the original key order)."""

    def _build_trunk(self, *, c_in, c_out, c_r, patch_size, c_cond, c_hidden, nhead, blocks, block_repeat,
                     level_config, kernel_size, dropout, self_attn, t_conds, make_downscaler, make_upscaler,
                     dtype, device, operations):
        levels = len(c_hidden)
        dropout = _per_level(dropout, levels)
        self_attn = _per_level(self_attn, levels)
        block_repeat = block_repeat if block_repeat is not None else [[1] * levels, [1] * levels]
        self.c_r = c_r
        self.t_conds = list(t_conds)
        layer_kwargs = dict(dtype=dtype, device=device, operations=operations)

        def make_block(letter, level, c_skip=0):
            c = c_hidden[level]
            if letter == "C":
                return ResBlock(c, c_skip, kernel_size=kernel_size, dropout=dropout[level], **layer_kwargs)
            if letter == "A":
                return AttnBlock(c, c_cond, nhead[level], self_attn=self_attn[level], dropout=dropout[level],
                                 **layer_kwargs)
            if letter == "F":
                return FeedForwardBlock(c, dropout=dropout[level], **layer_kwargs)
            if letter == "T":
                return TimestepBlock(c, c_r, conds=self.t_conds, **layer_kwargs)
            raise ValueError(f"unknown block letter {letter!r} in level_config {level_config!r}: expected C, T, A or F")

        def make_repeat_mappers(level, repeats):
            c = c_hidden[level]
            return nn.ModuleList(
                operations.Conv2d(c, c, kernel_size=1, dtype=dtype, device=device) for _ in range(repeats - 1)
            )

        self.embedding = nn.Sequential(
            nn.PixelUnshuffle(patch_size),
            operations.Conv2d(c_in * patch_size ** 2, c_hidden[0], kernel_size=1, dtype=dtype, device=device),
            LayerNorm2d(c_hidden[0], **layer_kwargs),
        )

        self.down_blocks = nn.ModuleList()
        self.down_downscalers = nn.ModuleList()
        self.down_repeat_mappers = nn.ModuleList()
        for level in range(levels):
            if level == 0:
                self.down_downscalers.append(nn.Identity())
            else:
                self.down_downscalers.append(nn.Sequential(
                    LayerNorm2d(c_hidden[level - 1], **layer_kwargs),
                    make_downscaler(c_hidden[level - 1], c_hidden[level], level),
                ))
            self.down_blocks.append(nn.ModuleList(
                make_block(letter, level) for _ in range(blocks[0][level]) for letter in level_config[level]
            ))
            self.down_repeat_mappers.append(make_repeat_mappers(level, block_repeat[0][level]))

        # The up path is stored deepest level first; per-level counts in `blocks[1]` and
        # `block_repeat[1]` are listed in that order too, hence the [::-1] when indexing by level.
        self.up_blocks = nn.ModuleList()
        self.up_upscalers = nn.ModuleList()
        self.up_repeat_mappers = nn.ModuleList()
        for level in reversed(range(levels)):
            if level == 0:
                self.up_upscalers.append(nn.Identity())
            else:
                self.up_upscalers.append(nn.Sequential(
                    LayerNorm2d(c_hidden[level], **layer_kwargs),
                    make_upscaler(c_hidden[level], c_hidden[level - 1], level),
                ))
            takes_skip = level < levels - 1
            self.up_blocks.append(nn.ModuleList(
                make_block(letter, level, c_skip=c_hidden[level] if takes_skip and j == k == 0 else 0)
                for j in range(blocks[1][::-1][level]) for k, letter in enumerate(level_config[level])
            ))
            self.up_repeat_mappers.append(make_repeat_mappers(level, block_repeat[1][::-1][level]))

        self.clf = nn.Sequential(
            LayerNorm2d(c_hidden[0], **layer_kwargs),
            operations.Conv2d(c_hidden[0], c_out * patch_size ** 2, kernel_size=1, dtype=dtype, device=device),
            nn.PixelShuffle(patch_size),
        )

    def gen_r_embedding(self, r, max_positions=10000):
        return noise_level_embedding(r, self.c_r, max_positions)

    def noise_level_embeddings(self, r, t_cond_values):
        """[emb(r), emb(t_cond) for each t_cond] side by side; a t_cond that is absent counts as 0."""
        embeddings = [self.gen_r_embedding(r)]
        for name in self.t_conds:
            value = t_cond_values.get(name)
            value = torch.zeros_like(r) if value is None else torch.as_tensor(value).to(r).expand_as(r)
            embeddings.append(self.gen_r_embedding(value))
        return torch.cat(embeddings, dim=1)

    def _run_block(self, block, x, r_embed, cond_tokens):
        if isinstance(block, AttnBlock):
            return block(x, cond_tokens)
        if isinstance(block, TimestepBlock):
            return block(x, r_embed)
        return block(x)

    def _down_encode(self, x, r_embed, cond_tokens, control, stream):
        level_outputs = []
        for blocks, downscaler, repeat_mappers in zip(self.down_blocks, self.down_downscalers,
                                                      self.down_repeat_mappers):
            x = stream.level_change(downscaler, x)
            for repeat in range(len(repeat_mappers) + 1):
                for block in blocks:
                    x = stream.block(self, block, x, r_embed, cond_tokens, control)
                if repeat < len(repeat_mappers):
                    x = stream.repeat_mapper(repeat_mappers[repeat], x)
            x = stream.level_output(x)
            level_outputs.insert(0, x)
        return level_outputs  # deepest first

    def _up_decode(self, level_outputs, r_embed, cond_tokens, control, stream):
        x = level_outputs[0]
        for depth, (blocks, upscaler, repeat_mappers) in enumerate(zip(self.up_blocks, self.up_upscalers,
                                                                       self.up_repeat_mappers)):
            for repeat in range(len(repeat_mappers) + 1):
                for k, block in enumerate(blocks):
                    skip = level_outputs[depth] if isinstance(block, ResBlock) and k == 0 and depth > 0 else None
                    # Odd sizes lose a pixel on the way down; bring x back to the skip's grid.
                    if skip is not None and x.shape[-2:] != skip.shape[-2:]:
                        x = F.interpolate(x, skip.shape[-2:], mode="bilinear", align_corners=True)
                    x = stream.block(self, block, x, r_embed, cond_tokens, control, skip)
                if repeat < len(repeat_mappers):
                    x = stream.repeat_mapper(repeat_mappers[repeat], x)
            x = stream.level_change(upscaler, x)
        return x

    def _down_and_up(self, h, r_embed, cond_tokens, control=None, stream=None):
        """Down path then up path, then clf: the embedded input `h` -> the model output."""
        control = control if control is not None else ControlResiduals()
        stream = stream if stream is not None else PlainStream()
        level_outputs = self._down_encode(h, r_embed, cond_tokens, control, stream)
        return self.clf(self._up_decode(level_outputs, r_embed, cond_tokens, control, stream))
