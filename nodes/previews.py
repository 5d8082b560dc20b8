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
import comfy.model_management
import folder_paths
import latent_preview
from comfy.cli_args import LatentPreviewMethod, args

from . import host_models
from .input_checks import vae_problem
from . import memory_limits
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
                if cached[1] is None:
                    continue
                return cached[1]
            try:
                vae = host_models.build_stage_c_coder_vae(previewer_parts=load_network(name, (folder,), "previewer"))
            except Exception as error:  # a malformed or foreign file: previews are no reason to fail a prompt
                logging.warning(f"[stable cascade] {name} is not usable as a Previewer for previews: {error}")
                _installed_previewers[path] = (mtime, None)  # warn once per file version, not every step
                continue
            _installed_previewers[path] = (mtime, vae)
            return vae
    return None


def make_preview_fn(model_patcher, preview_vae=None, node="Stage C Prior Sampler (Stable Cascade)"):
    """A function x0 (model space) -> the host's preview tuple, or None when previews are off.

    Previews never fail a prompt: a preview_vae that cannot preview, a Previewer that raises, or a
    latent too large to preview falls back to the host's own preview, with a warning in the log.
    """
    latent_format = model_patcher.model.latent_format
    if preview_vae is not None:
        problem = vae_problem(node, "preview_vae", preview_vae, "stage_c_previewer")
        if problem is not None:
            logging.warning(f"[stable cascade] previews fall back to ComfyUI's own: {problem}")
            preview_vae = None
    if preview_vae is None and args.preview_method != LatentPreviewMethod.NoPreviews:
        if isinstance(latent_format, comfy.latent_formats.SC_Prior):
            preview_vae = installed_previewer()
    host_previewer = latent_preview.get_previewer(model_patcher.load_device, latent_format)

    def host_preview(x0):
        return host_previewer.decode_latent_to_preview_image("JPEG", x0) if host_previewer is not None else None

    if preview_vae is None:
        return host_preview if host_previewer is not None else None

    failed = []

    def previewer_preview(x0):
        if failed:
            return host_preview(x0)
        try:
            latent = latent_format.process_out(x0[:1])
            needed = preview_vae.memory_used_decode(latent.shape, preview_vae.vae_dtype)
            if needed > memory_limits.budget_bytes(preview_vae.device):
                raise MemoryError(f"a preview of this size needs about {needed / 1024**3:.1f} GiB")
            image = preview_vae.decode(latent)
            return ("JPEG", _to_pil(image), args.preview_size)
        except Exception as error:  # a broken Previewer costs the previews, never the prompt
            if isinstance(error, comfy.model_management.InterruptProcessingException):
                raise
            logging.warning(f"[stable cascade] the Previewer failed ({type(error).__name__}: {error}); "
                            "previews fall back to ComfyUI's own for the rest of this sampling")
            failed.append(error)
            return host_preview(x0)

    return previewer_preview
