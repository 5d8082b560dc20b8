"""Live previews while sampling: the real Previewer for Stage C, the host's previewer otherwise.

Which one a sampler shows:
1. a Stage C VAE connected to the sampler (its Previewer decodes every step's x0 estimate);
2. otherwise, when the user has previews on (--preview-method other than none) and a Previewer file
   is installed (models/vae_approx or models/vae, a name containing "previewer"), that Previewer:
   the host would only show a 16->3 channel colour blob of the 24x24 latent;
3. otherwise whatever the host's own setting gives (latent2rgb, or nothing).
"""
import logging
import os

import numpy as np
from PIL import Image

import comfy.latent_formats
import folder_paths
import latent_preview
from comfy.cli_args import LatentPreviewMethod, args

from . import host_models
from .model_files import load_network

PREVIEWER_FOLDERS = ("vae_approx", "vae")
_installed_previewers = {}  # path -> (mtime, host VAE): loaded once, reloaded when the file changes


def _to_pil(image):
    """First image of a host IMAGE batch [B,H,W,C] in 0..1 -> PIL."""
    pixels = (image[0].detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)


def installed_previewer():
    """The first Previewer file in models/vae_approx or models/vae as a host VAE, or None."""
    for folder in PREVIEWER_FOLDERS:
        for name in folder_paths.get_filename_list(folder):
            if "previewer" not in os.path.basename(name).lower():
                continue
            path = folder_paths.get_full_path(folder, name)
            mtime = os.path.getmtime(path)
            cached = _installed_previewers.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            try:
                vae = host_models.build_stage_c_coder_vae(previewer_parts=load_network(name, (folder,), "previewer"))
            except ValueError as error:  # not a Previewer after all: previews are no reason to fail
                logging.warning(f"[stable cascade] {name} is not usable as a Previewer for previews: {error}")
                continue
            _installed_previewers[path] = (mtime, vae)
            return vae
    return None


def make_preview_fn(model_patcher, preview_vae=None):
    """A function x0 (model space) -> the host's preview tuple, or None when previews are off."""
    latent_format = model_patcher.model.latent_format
    if preview_vae is None and args.preview_method != LatentPreviewMethod.NoPreviews:
        if isinstance(latent_format, comfy.latent_formats.SC_Prior):
            preview_vae = installed_previewer()
    if preview_vae is not None:

        def previewer_preview(x0):
            image = preview_vae.decode(latent_format.process_out(x0[:1]))
            return ("JPEG", _to_pil(image), args.preview_size)

        return previewer_preview

    host_previewer = latent_preview.get_previewer(model_patcher.load_device, latent_format)
    if host_previewer is None:
        return None
    return lambda x0: host_previewer.decode_latent_to_preview_image("JPEG", x0)
