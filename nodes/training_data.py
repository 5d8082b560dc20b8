"""The training set for the LoRA trainer: from the host's dataset nodes or a folder, as Stage C latents."""
import os

import torch

import comfy.model_management as mm
import folder_paths

from ..lora.dataset import folder_pairs, load_image, square_crop_resize


def resolve_folder(path):
    """An absolute folder, or one relative to the host's input folder (where its dataset nodes look)."""
    path = (path or "").strip()
    if not path or os.path.isabs(path):
        return path
    return os.path.join(folder_paths.get_input_directory(), path)


def folder_dataset(path):
    """(images [H,W,3] list, captions) of a folder of image + .txt pairs; every problem raises first."""
    pairs = folder_pairs(resolve_folder(path))
    return [load_image(image) for image, _ in pairs], [caption for _, caption in pairs]


def host_dataset(images, captions):
    """(images [H,W,3] list, captions) from the host's lists (e.g. LoadImageTextDataSetFromFolder)."""
    singles = [image for batch in images for image in batch]  # each list entry is an IMAGE batch [B,H,W,C]
    if captions is None:
        raise ValueError("'images' is connected but 'captions' is not: connect the texts output of the dataset node")
    if len(captions) != len(singles):
        raise ValueError(f"the dataset has {len(singles)} images but {len(captions)} captions: they must pair up one to one")
    missing = [str(i + 1) for i, caption in enumerate(captions) if not (caption or "").strip()]
    if missing:
        raise ValueError(f"image(s) {', '.join(missing[:10])} of the dataset have no caption (an empty text); "
                         "give each image a caption (<image name>.txt beside it)")
    return singles, [caption.strip() for caption in captions]


@torch.no_grad()
def encode_latents(vae, model, images, resolution):
    """[N, 16, resolution/32, resolution/32] clean Stage C latents (float32, CPU) through the EfficientNet encoder."""
    latents = []
    for image in images:
        pixels = square_crop_resize(image, resolution).unsqueeze(0)
        latent = vae.encode(pixels)
        latents.append(model.model.process_latent_in(latent.float()).to(mm.intermediate_device()))
    return torch.cat(latents).float().cpu()
