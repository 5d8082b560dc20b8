"""Stage A: the VQGAN between RGB images and the 4-channel latent that Stage B works in (official.md §2).

The encoder downsamples by 4 (pixel unshuffle + one strided conv) and ends in a BatchNorm; the decoder
mirrors it with a deep bottleneck. Latents are exchanged divided by `scale_factor` (that is the space
Stage B was trained in); decoding does not quantise, inference decodes the continuous latent directly.
"""
import torch
from torch import nn

from .blocks import BatchNorm2d, LayerNorm2d, cast_like


class ResBlock(nn.Module):
    """Stage A's own residual block: modulated depthwise conv, then a modulated channel MLP.

    The six `gammas` are (scale, shift, gate) for each half; zero gammas make the block the identity.
    """

    def __init__(self, c, c_hidden, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm1 = LayerNorm2d(c, dtype=dtype, device=device, operations=operations)
        self.depthwise = nn.Sequential(
            nn.ReplicationPad2d(1),
            operations.Conv2d(c, c, kernel_size=3, groups=c, dtype=dtype, device=device),
        )
        self.norm2 = LayerNorm2d(c, dtype=dtype, device=device, operations=operations)
        self.channelwise = nn.Sequential(
            operations.Linear(c, c_hidden, dtype=dtype, device=device),
            nn.GELU(),
            operations.Linear(c_hidden, c, dtype=dtype, device=device),
        )
        self.gammas = nn.Parameter(torch.zeros(6, dtype=dtype, device=device))

    def forward(self, x):
        scale1, shift1, gate1, scale2, shift2, gate2 = cast_like(self.gammas, x)
        x = x + self.depthwise(self.norm1(x) * (1 + scale1) + shift1) * gate1
        modulated = self.norm2(x) * (1 + scale2) + shift2
        return x + self.channelwise(modulated.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * gate2


class VectorQuantizer(nn.Module):
    """The codebook (key `vquantizer.codebook.weight`) and nearest-neighbour lookup along dim 1."""

    def __init__(self, c_latent, codebook_size, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.codebook = operations.Embedding(codebook_size, c_latent, dtype=dtype, device=device)

    def nearest_indices(self, latent):
        """[B, C, H, W] -> [B, H, W] index of the nearest codebook vector (squared L2)."""
        vectors = latent.movedim(1, -1).reshape(-1, latent.size(1))
        codebook = cast_like(self.codebook.weight, vectors)
        distances = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.t()
                     + codebook.pow(2).sum(1)[None, :])
        return distances.argmin(dim=1).view(latent.size(0), *latent.shape[2:])

    def forward(self, latent):
        indices = self.nearest_indices(latent)
        return cast_like(self.codebook.weight, latent)[indices].movedim(-1, 1)


class StageA(nn.Module):
    def __init__(self, levels=2, bottleneck_blocks=12, c_hidden=384, c_latent=4, codebook_size=8192,
                 scale_factor=0.43, *, dtype=None, device=None, operations=None):
        super().__init__()
        operations = operations if operations is not None else nn
        layer_kwargs = dict(dtype=dtype, device=device, operations=operations)
        self.scale_factor = scale_factor
        c_levels = [c_hidden // 2 ** i for i in reversed(range(levels))]  # e.g. [192, 384]

        self.in_block = nn.Sequential(
            nn.PixelUnshuffle(2),
            operations.Conv2d(3 * 4, c_levels[0], kernel_size=1, dtype=dtype, device=device),
        )
        down_blocks = []
        for level in range(levels):
            if level > 0:
                down_blocks.append(operations.Conv2d(c_levels[level - 1], c_levels[level], kernel_size=4, stride=2,
                                                     padding=1, dtype=dtype, device=device))
            down_blocks.append(ResBlock(c_levels[level], c_levels[level] * 4, **layer_kwargs))
        down_blocks.append(nn.Sequential(
            operations.Conv2d(c_levels[-1], c_latent, kernel_size=1, bias=False, dtype=dtype, device=device),
            BatchNorm2d(c_latent, dtype=dtype, device=device),  # the latent leaves with mean 0, std 1
        ))
        self.down_blocks = nn.Sequential(*down_blocks)

        self.vquantizer = VectorQuantizer(c_latent, codebook_size, **layer_kwargs)

        up_blocks = [nn.Sequential(operations.Conv2d(c_latent, c_levels[-1], kernel_size=1, dtype=dtype, device=device))]
        for depth in range(levels):
            c = c_levels[levels - 1 - depth]
            for _ in range(bottleneck_blocks if depth == 0 else 1):
                up_blocks.append(ResBlock(c, c * 4, **layer_kwargs))
            if depth < levels - 1:
                up_blocks.append(operations.ConvTranspose2d(c, c_levels[levels - 2 - depth], kernel_size=4, stride=2,
                                                            padding=1, dtype=dtype, device=device))
        self.up_blocks = nn.Sequential(*up_blocks)
        self.out_block = nn.Sequential(
            operations.Conv2d(c_levels[0], 3 * 4, kernel_size=1, dtype=dtype, device=device),
            nn.PixelShuffle(2),
        )

    def encode(self, images, quantize=False):
        """RGB in [0, 1], [B,3,H,W] (H, W multiples of 4) -> Stage B latent [B,c_latent,H/4,W/4]."""
        latent = self.down_blocks(self.in_block(images))
        if quantize:
            latent = self.vquantizer(latent)
        return latent / self.scale_factor

    def decode(self, latent):
        """Stage B latent -> RGB, roughly [0, 1] (not clamped)."""
        return self.out_block(self.up_blocks(latent * self.scale_factor))
