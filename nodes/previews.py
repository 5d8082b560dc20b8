"""Live previews while sampling: the real Previewer for Stage C, the host's previewer otherwise."""
import numpy as np
from PIL import Image

import latent_preview
from comfy.cli_args import args


def _to_pil(image):
    """First image of a host IMAGE batch [B,H,W,C] in 0..1 -> PIL."""
    pixels = (image[0].detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)


def make_preview_fn(model_patcher, preview_vae=None):
    """A function x0 (model space) -> the host's preview tuple, or None when previews are off.

    With a Stage C VAE holding the Previewer, the x0 estimate is decoded by it (an 8x image that
    actually looks like the result); without one, the host's own choice (--preview-method) applies.
    """
    latent_format = model_patcher.model.latent_format
    if preview_vae is not None:

        def previewer_preview(x0):
            image = preview_vae.decode(latent_format.process_out(x0[:1]))
            return ("JPEG", _to_pil(image), args.preview_size)

        return previewer_preview

    host_previewer = latent_preview.get_previewer(model_patcher.load_device, latent_format)
    if host_previewer is None:
        return None
    return lambda x0: host_previewer.decode_latent_to_preview_image("JPEG", x0)
