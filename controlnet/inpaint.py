"""The inpainting/outpainting control image, as the original InpaintFilter makes it (official.md §6.2).

Four channels: the image with the region to regenerate painted white, then that region as a 0/1
mask. Outpainting is the same hint on a canvas padded outward, the padding being the region to
regenerate. Without a user mask the original derives one from a saliency map (`saliency_mask`):
`outpaint` then inverts it, keeping the salient object and regenerating its surroundings.
"""
import torch
import torch.nn.functional as F

SALIENCY_BLUR_KERNEL = 141  # sigma 21.5, torchvision's default for this kernel size


def inpaint_control(images, mask):
    """images [B,3,H,W] in [0,1], mask [B,1,H,W] (True / >0.5 = regenerate) -> hint [B,4,H,W]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"the inpainting hint needs RGB images [B,3,H,W]; got shape {list(images.shape)}")
    if mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is {images.shape[-1]}x{images.shape[-2]} "
            "(width x height): they must have the same size")
    region = mask if mask.dtype == torch.bool else mask > 0.5
    region = region.expand(images.shape[0], 1, *images.shape[-2:])
    painted = torch.where(region, torch.ones_like(images), images)
    return torch.cat([painted, region.to(images.dtype)], dim=1)


def saliency_mask(saliency_map, size, threshold, outpaint=False):
    """The original's mask from a saliency map [B,1,h,w]: threshold, invert for outpainting,
    nearest-resize to `size` (H, W), then a 141-pixel Gaussian blur thresholded at 0.5 to round it."""
    region = saliency_map > threshold
    if outpaint:
        region = ~region
    region = F.interpolate(region.float(), size=tuple(size), mode="nearest")
    return _gaussian_blur(region, SALIENCY_BLUR_KERNEL) > 0.5


def _gaussian_blur(images, kernel_size):
    """torchvision's gaussian_blur (default sigma, reflect padding, one 2-D kernel) in plain torch."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    half = (kernel_size - 1) * 0.5
    positions = torch.linspace(-half, half, steps=kernel_size, dtype=images.dtype, device=images.device)
    kernel_1d = torch.exp(-0.5 * (positions / sigma).pow(2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    kernel_2d = (kernel_1d[:, None] * kernel_1d[None, :]).expand(images.shape[1], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel_2d, groups=images.shape[1])


def composite_outside_mask(generated, original, mask):
    """generated [B,C,H,W] where mask is 1, original elsewhere; original and mask resized (bilinear) to generated's size."""
    size = generated.shape[-2:]
    original = F.interpolate(original, size=size, mode="bilinear", align_corners=False) if original.shape[-2:] != size else original
    mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False) if mask.shape[-2:] != size else mask
    batch = max(generated.shape[0], original.shape[0], mask.shape[0])
    mask = mask.clamp(0, 1).expand(batch, 1, *size)
    return generated.expand(batch, *generated.shape[1:]) * mask + original.expand(batch, *original.shape[1:]) * (1 - mask)
