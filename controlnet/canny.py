"""The canny control image, as the original CannyFilter makes it (official.md §6.2), in pure torch.

The original resizes to 224x224 (aspect ignored), truncates to uint8 and calls OpenCV's Canny with
thresholds 100/200 (3x3 Sobel, L1 gradient), then resizes the 0/1 edges back. `canny_edges` follows
OpenCV's integer algorithm step by step: Sobel with replicated borders, per pixel the channel with
the largest gradient, non-maximum suppression along the quantised gradient direction, hysteresis.
"""
import torch
import torch.nn.functional as F

ORIGINAL_RESIZE = 224
LOW_THRESHOLD = 100
HIGH_THRESHOLD = 200
_TAN_22_5_Q15 = 13573  # OpenCV's round(tan(22.5°) * 2^15)
_SHIFT = 15


def canny_control(images, resize=ORIGINAL_RESIZE, low=LOW_THRESHOLD, high=HIGH_THRESHOLD):
    """RGB images [B,3,H,W] in [0,1] -> soft edges [B,1,H,W] in [0,1], as CannyFilter(resize=224)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"canny needs RGB images [B,3,H,W]; got shape {list(images.shape)}")
    height, width = images.shape[-2:]
    small = F.interpolate(images.float(), size=(resize, resize), mode="bilinear", align_corners=False)
    as_uint8 = small.mul(255).clamp(0, 255).to(torch.uint8)  # truncation, like numpy's astype(uint8)
    edges = canny_edges(as_uint8, low, high).float()
    return F.interpolate(edges, size=(height, width), mode="bilinear", align_corners=False)


def canny_edges(images_uint8, low=LOW_THRESHOLD, high=HIGH_THRESHOLD):
    """uint8 images [B,C,H,W] -> bool edges [B,1,H,W], as cv2.Canny(image, low, high) on HWC input."""
    values = images_uint8.to(torch.int64)
    dx, dy = _sobel(values)
    magnitude = dx.abs() + dy.abs()
    # The channel with the largest magnitude gives the gradient; ties keep the first channel.
    channel = magnitude.argmax(dim=1, keepdim=True)
    magnitude = magnitude.gather(1, channel)
    dx, dy = dx.gather(1, channel), dy.gather(1, channel)
    candidates = _non_maximum_suppressed(magnitude, dx, dy) & (magnitude > int(low))
    strong = candidates & (magnitude > int(high))
    return _hysteresis(strong, candidates)


def _sobel(values):
    channels = values.shape[1]
    kernel_x = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)
    kernels = torch.stack([kernel_x, kernel_x.t()]).unsqueeze(1).repeat(channels, 1, 1, 1)
    padded = F.pad(values.double(), (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, kernels, groups=channels).round().to(torch.int64)
    return gradients[:, 0::2], gradients[:, 1::2]


def _neighbour(magnitude, row_step, column_step):
    """magnitude at (y + row_step, x + column_step), 0 outside the image."""
    padded = F.pad(magnitude, (1, 1, 1, 1))
    height, width = magnitude.shape[-2:]
    return padded[..., 1 + row_step:1 + row_step + height, 1 + column_step:1 + column_step + width]


def _non_maximum_suppressed(magnitude, dx, dy):
    """True where the magnitude is a maximum across the edge (OpenCV's asymmetric > / >= tests)."""
    x = dx.abs()
    y = dy.abs() << _SHIFT
    tan22_x = x * _TAN_22_5_Q15
    tan67_x = tan22_x + (x << (_SHIFT + 1))
    horizontal = y < tan22_x
    vertical = ~horizontal & (y > tan67_x)
    diagonal = ~horizontal & ~vertical
    same_sign = (dx ^ dy) >= 0
    n = lambda rows, columns: _neighbour(magnitude, rows, columns)
    horizontal_max = (magnitude > n(0, -1)) & (magnitude >= n(0, 1))
    vertical_max = (magnitude > n(-1, 0)) & (magnitude >= n(1, 0))
    # Gradient signs alike: the gradient points down-right, compare up-left with down-right.
    diagonal_max = torch.where(same_sign,
                               (magnitude > n(-1, -1)) & (magnitude > n(1, 1)),
                               (magnitude > n(-1, 1)) & (magnitude > n(1, -1)))
    return (horizontal & horizontal_max) | (vertical & vertical_max) | (diagonal & diagonal_max)


def _hysteresis(strong, candidates):
    """Candidates 8-connected to a strong pixel through other candidates."""
    edges = strong.clone()
    while True:
        grown = F.max_pool2d(edges.float(), kernel_size=3, stride=1, padding=1).bool() & candidates
        if torch.equal(grown, edges):
            return edges
        edges = grown
