"""EfficientNet encoder: images -> the 16-channel latent Stage C works in (official.md §5.1).

The backbone is EfficientNet-V2-S's feature extractor (stride 32, 1280 channels), written out here with
module names that give torchvision's `efficientnet_v2_s().features` keys under `backbone.`; a 1x1 conv
and an affine-free BatchNorm map it to 16 normalised channels.
"""
import torch
from torch import nn

from .blocks import BatchNorm2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (block kind, expand ratio, kernel, first stride, channels in, channels out, layers) per stage
EFFICIENTNET_V2_S_STAGES = [
    ("fused", 1, 3, 1, 24, 24, 2),
    ("fused", 4, 3, 2, 24, 48, 4),
    ("fused", 4, 3, 2, 48, 64, 4),
    ("mb", 4, 3, 2, 64, 128, 6),
    ("mb", 6, 3, 1, 128, 160, 9),
    ("mb", 6, 3, 2, 160, 256, 15),
]
BACKBONE_CHANNELS = 1280


class ConvBNAct(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BatchNorm (eps 1e-3) [-> SiLU]; keys .0 conv, .1 norm."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, groups=1, activation=True, *, dtype, device, operations):
        layers = [
            operations.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                              groups=groups, bias=False, dtype=dtype, device=device),
            BatchNorm2d(c_out, eps=1e-3, dtype=dtype, device=device),
        ]
        if activation:
            layers.append(nn.SiLU())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gating from globally pooled features: sigmoid(fc2(silu(fc1(mean))))."""

    def __init__(self, c, c_squeeze, *, dtype, device, operations):
        super().__init__()
        self.fc1 = operations.Conv2d(c, c_squeeze, 1, dtype=dtype, device=device)
        self.fc2 = operations.Conv2d(c_squeeze, c, 1, dtype=dtype, device=device)

    def forward(self, x):
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(pooled))))


class FusedMBConv(nn.Module):
    """Full conv expansion (or a single conv when the ratio is 1) -> 1x1 projection; residual when shapes allow."""

    def __init__(self, c_in, c_out, expand_ratio, kernel_size, stride, **layer_kwargs):
        super().__init__()
        self.has_residual = stride == 1 and c_in == c_out
        c_expanded = c_in * expand_ratio
        if c_expanded == c_in:
            self.block = nn.Sequential(ConvBNAct(c_in, c_out, kernel_size, stride, **layer_kwargs))
        else:
            self.block = nn.Sequential(
                ConvBNAct(c_in, c_expanded, kernel_size, stride, **layer_kwargs),
                ConvBNAct(c_expanded, c_out, 1, activation=False, **layer_kwargs),
            )

    def forward(self, x):
        out = self.block(x)
        return out + x if self.has_residual else out  # stochastic depth is inactive at inference


class MBConv(nn.Module):
    """1x1 expansion -> depthwise conv -> squeeze-excitation -> 1x1 projection; residual when shapes allow."""

    def __init__(self, c_in, c_out, expand_ratio, kernel_size, stride, **layer_kwargs):
        super().__init__()
        self.has_residual = stride == 1 and c_in == c_out
        c_expanded = c_in * expand_ratio
        self.block = nn.Sequential(
            ConvBNAct(c_in, c_expanded, 1, **layer_kwargs),
            ConvBNAct(c_expanded, c_expanded, kernel_size, stride, groups=c_expanded, **layer_kwargs),
            SqueezeExcitation(c_expanded, max(1, c_in // 4), **layer_kwargs),
            ConvBNAct(c_expanded, c_out, 1, activation=False, **layer_kwargs),
        )

    def forward(self, x):
        out = self.block(x)
        return out + x if self.has_residual else out


def efficientnet_v2_s_features(*, dtype=None, device=None, operations=nn):
    """Stem, six stages of (Fused)MBConv blocks, 1x1 head: [B,3,H,W] -> [B,1280,ceil(H/32),ceil(W/32)]."""
    layer_kwargs = dict(dtype=dtype, device=device, operations=operations)
    features = [ConvBNAct(3, EFFICIENTNET_V2_S_STAGES[0][4], 3, stride=2, **layer_kwargs)]
    for kind, expand_ratio, kernel_size, stride, c_in, c_out, layers in EFFICIENTNET_V2_S_STAGES:
        block_class = FusedMBConv if kind == "fused" else MBConv
        features.append(nn.Sequential(*(
            block_class(c_in if i == 0 else c_out, c_out, expand_ratio, kernel_size, stride if i == 0 else 1,
                        **layer_kwargs)
            for i in range(layers)
        )))
    features.append(ConvBNAct(EFFICIENTNET_V2_S_STAGES[-1][5], BACKBONE_CHANNELS, 1, **layer_kwargs))
    return nn.Sequential(*features)


class EfficientNetEncoder(nn.Module):
    def __init__(self, c_latent=16, *, dtype=None, device=None, operations=None):
        super().__init__()
        operations = operations if operations is not None else nn
        self.backbone = efficientnet_v2_s_features(dtype=dtype, device=device, operations=operations)
        self.mapper = nn.Sequential(
            operations.Conv2d(BACKBONE_CHANNELS, c_latent, kernel_size=1, bias=False, dtype=dtype, device=device),
            BatchNorm2d(c_latent, affine=False, dtype=dtype, device=device),  # latent leaves with mean 0, std 1
        )

    def forward(self, images):
        """RGB in [-1, 1], [B,3,H,W] -> Stage C latent [B,16,ceil(H/32),ceil(W/32)].

        The ImageNet normalisation is a constant here, not a state-dict entry: the released file has none.
        """
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        normalised = ((images * 0.5 + 0.5) - mean) / std
        return self.mapper(self.backbone(normalised))


def resize_for_encoder(images, size):
    """RGB [B,3,H,W] resized to `size` (h, w) as the original prepares encoder input: torchvision's
    antialiased bilinear resize (`resize_image`, `effnet_preprocess` happens in `forward`)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return nn.functional.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
