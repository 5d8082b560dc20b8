"""The super-resolution control input: the EfficientNet latent of the low-resolution image, nearest-upsampled
2x so it lies on the grid of the Stage C latent being sampled (which is therefore twice as large; the original
samples it with cfg 1)."""
import torch.nn.functional as F

SCALE = 2
ORIGINAL_CFG = 1.0


def super_resolution_control(effnet_latent):
    """[B,16,h,w] EfficientNet latent of the image to upscale -> [B,16,2h,2w] ControlNet input."""
    if effnet_latent.dim() != 4 or effnet_latent.shape[1] != 16:
        raise ValueError(f"the super-resolution ControlNet takes a 16-channel EfficientNet latent; got shape {list(effnet_latent.shape)}")
    return F.interpolate(effnet_latent, scale_factor=SCALE, mode="nearest")
