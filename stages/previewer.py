"""Previewer: a small conv net that decodes a Stage C latent to a rough RGB image, 8x larger (official.md §5.2).

Output is the original's, roughly [0, 1] (the host's copy maps it to [-1, 1] instead).
"""
from torch import nn

from .blocks import BatchNorm2d


class Previewer(nn.Module):
    def __init__(self, c_in=16, c_hidden=512, c_out=3, *, dtype=None, device=None, operations=None):
        super().__init__()
        operations = operations if operations is not None else nn
        kw = dict(dtype=dtype, device=device)

        def conv(c_from, c_to, kernel_size):
            return operations.Conv2d(c_from, c_to, kernel_size=kernel_size, padding=kernel_size // 2, **kw)

        def upsample(c_from, c_to):
            return operations.ConvTranspose2d(c_from, c_to, kernel_size=2, stride=2, **kw)

        def gelu_bn(c):
            return [nn.GELU(), BatchNorm2d(c, **kw)]

        c_mid, c_low = c_hidden // 2, c_hidden // 4
        self.blocks = nn.Sequential(
            conv(c_in, c_hidden, 1), *gelu_bn(c_hidden),
            conv(c_hidden, c_hidden, 3), *gelu_bn(c_hidden),
            upsample(c_hidden, c_mid), *gelu_bn(c_mid),        # x2
            conv(c_mid, c_mid, 3), *gelu_bn(c_mid),
            upsample(c_mid, c_low), *gelu_bn(c_low),           # x4
            conv(c_low, c_low, 3), *gelu_bn(c_low),
            upsample(c_low, c_low), *gelu_bn(c_low),           # x8
            conv(c_low, c_low, 3), *gelu_bn(c_low),
            conv(c_low, c_out, 1),
        )

    def forward(self, latent):
        """Stage C latent [B,16,h,w] -> RGB [B,3,8h,8w], roughly [0, 1] (not clamped)."""
        return self.blocks(latent)
