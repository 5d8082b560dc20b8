"""The Stable Cascade ControlNet (official.md §6.1): a backbone turns the control input into features,
one projection per injection block maps them to Stage C's width.

    effnet : EfficientNet-V2-S features (first conv widened to c_in channels, and without padding as
             in the original), 1280 channels at 1/32 of the input: canny (c_in 3) and inpainting (c_in 4)
    large  : 1x1 convs and eight residual conv blocks on a 16-channel EfficientNet latent: super-resolution
    simple : two 3x3 convs that keep c_in channels: face identity (512-d face embeddings)

`forward` returns the original's list with one entry per Stage C ResBlock call (None where nothing
is injected); Stage C resizes each entry to its block's grid.
"""
from torch import nn

from ..stages.effnet import BACKBONE_CHANNELS, efficientnet_v2_s_features

BOTTLENECKS = ("effnet", "simple", "large")
RELEASED_INJECTION_BLOCKS = [0, 4, 8, 12, 51, 55, 59, 63]
# The 'large' bottleneck's widths (expanded, hidden, residual blocks, features) in the released file;
# read from a file's shapes, so that small test files can have smaller ones.
RELEASED_LARGE_WIDTHS = (16384, 1024, 8, 1280)


def _channel_layer_norm(operations):
    """LayerNorm over the channels of NCHW, with its affine (keys `<name>.weight`/`.bias` as the original)."""

    class ChannelLayerNorm(operations.LayerNorm):
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return ChannelLayerNorm


class ConvResBlock(nn.Module):
    """x + (LayerNorm, GELU, 3x3 conv) twice: the 'large' bottleneck's block."""

    def __init__(self, c, *, dtype=None, device=None, operations=nn):
        super().__init__()
        norm = _channel_layer_norm(operations)
        self.blocks = nn.Sequential(
            norm(c, dtype=dtype, device=device),
            nn.GELU(),
            operations.Conv2d(c, c, kernel_size=3, padding=1, dtype=dtype, device=device),
            norm(c, dtype=dtype, device=device),
            nn.GELU(),
            operations.Conv2d(c, c, kernel_size=3, padding=1, dtype=dtype, device=device),
        )

    def forward(self, x):
        return x + self.blocks(x)


def _effnet_backbone(c_in, layer_kwargs):
    backbone = efficientnet_v2_s_features(**layer_kwargs)
    if c_in != 3:
        first = backbone[0][0]
        # The original replaces torchvision's stem conv and forgets its padding: a 768 input gives a
        # 383 (not 384) stem output. The released weights were trained that way.
        backbone[0][0] = layer_kwargs["operations"].Conv2d(
            c_in, first.out_channels, kernel_size=3, stride=2, bias=False,
            dtype=layer_kwargs["dtype"], device=layer_kwargs["device"])
    return backbone, BACKBONE_CHANNELS


def _simple_backbone(c_in, layer_kwargs):
    operations, dtype, device = layer_kwargs["operations"], layer_kwargs["dtype"], layer_kwargs["device"]
    backbone = nn.Sequential(
        operations.Conv2d(c_in, c_in * 4, kernel_size=3, padding=1, dtype=dtype, device=device),
        nn.LeakyReLU(0.2),
        operations.Conv2d(c_in * 4, c_in, kernel_size=3, padding=1, dtype=dtype, device=device),
    )
    return backbone, c_in


def _large_backbone(c_in, layer_kwargs, widths=RELEASED_LARGE_WIDTHS):
    operations, dtype, device = layer_kwargs["operations"], layer_kwargs["dtype"], layer_kwargs["device"]
    expanded, hidden, res_blocks, features = widths
    backbone = nn.Sequential(
        operations.Conv2d(c_in, expanded, kernel_size=1, dtype=dtype, device=device),
        nn.LeakyReLU(0.2),
        operations.Conv2d(expanded, hidden, kernel_size=1, dtype=dtype, device=device),
        *(ConvResBlock(hidden, **layer_kwargs) for _ in range(res_blocks)),
        operations.Conv2d(hidden, features, kernel_size=1, dtype=dtype, device=device),
    )
    return backbone, features


_BACKBONES = {"effnet": _effnet_backbone, "simple": _simple_backbone, "large": _large_backbone}


class ControlNet(nn.Module):
    def __init__(self, c_in=3, c_proj=2048, proj_blocks=None, bottleneck_mode=None, large_widths=None, *, dtype=None,
                 device=None, operations=None):
        super().__init__()
        bottleneck_mode = bottleneck_mode or "effnet"
        if bottleneck_mode not in _BACKBONES:
            raise ValueError(f"unknown ControlNet bottleneck {bottleneck_mode!r}: expected one of {BOTTLENECKS}")
        layer_kwargs = dict(dtype=dtype, device=device, operations=operations if operations is not None else nn)
        self.c_in = c_in
        self.c_proj = c_proj
        self.bottleneck_mode = bottleneck_mode
        self.proj_blocks = list(proj_blocks if proj_blocks is not None else RELEASED_INJECTION_BLOCKS)
        if bottleneck_mode == "large":
            self.backbone, c_features = _large_backbone(c_in, layer_kwargs, tuple(large_widths or RELEASED_LARGE_WIDTHS))
        else:
            self.backbone, c_features = _BACKBONES[bottleneck_mode](c_in, layer_kwargs)
        conv = layer_kwargs["operations"].Conv2d
        self.projections = nn.ModuleList(
            nn.Sequential(
                conv(c_features, c_features, kernel_size=1, bias=False, dtype=dtype, device=device),
                nn.LeakyReLU(0.2),
                conv(c_features, c_proj, kernel_size=1, bias=False, dtype=dtype, device=device),
            )
            for _ in self.proj_blocks
        )

    def forward(self, control_input):
        """[B, c_in, H, W] -> list of max(proj_blocks)+1 entries: [B, c_proj, h, w] at the injection blocks, else None."""
        features = self.backbone(control_input)
        residuals = [None] * (max(self.proj_blocks) + 1)
        for projection, block in zip(self.projections, self.proj_blocks):
            residuals[block] = projection(features)
        return residuals
