"""A training set of images with captions: from a folder of image + .txt pairs, checked up front.

Every problem is found before any model loads, and reported with the file it concerns.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def folder_pairs(folder):
    """[(image path, caption)] of a folder of images, each with a caption in <image name>.txt.

    Raises ValueError naming every problem: no such folder, no images, images without a caption
    file or with an empty one, images that cannot be read.
    """
    if not folder or not os.path.isdir(folder):
        raise ValueError(f"dataset folder {folder!r} does not exist (expected a folder of images with a .txt caption each)")
    images = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise ValueError(f"dataset folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}), so there is nothing to train on")
    pairs, no_caption, unreadable = [], [], []
    for name in images:
        path = os.path.join(folder, name)
        caption_path = os.path.splitext(path)[0] + ".txt"
        caption = None
        if os.path.isfile(caption_path):
            with open(caption_path, encoding="utf-8") as handle:
                caption = handle.read().strip()
        if not caption:
            no_caption.append(name)
        problem = image_problem(path)
        if problem:
            unreadable.append(f"{name} ({problem})")
        pairs.append((path, caption))
    problems = []
    if no_caption:
        problems.append(f"{len(no_caption)} image(s) in {folder!r} have no caption (a non-empty <name>.txt beside "
                        f"the image): {', '.join(no_caption[:5])}")
    if unreadable:
        problems.append(f"{len(unreadable)} image(s) in {folder!r} cannot be read: {', '.join(unreadable[:5])}")
    if problems:
        raise ValueError("; ".join(problems))
    return pairs


def image_problem(path):
    """None when PIL can decode the image, else what went wrong."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises many kinds; any of them means unusable
        return f"{type(error).__name__}: {error}"
    return None


def load_image(path):
    """RGB image [H, W, 3] in 0..1 (the host's IMAGE layout, without the batch dimension)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels.copy())


def square_crop_resize(image, size):
    """[H, W, 3] -> [size, size, 3]: resize the shorter side to `size` (antialiased), crop the centre."""
    pixels = image.permute(2, 0, 1).unsqueeze(0).float()
    height, width = pixels.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    pixels = F.interpolate(pixels, size=new_size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return pixels[0, :, top:top + size, left:left + size].permute(1, 2, 0).clamp(0, 1)
