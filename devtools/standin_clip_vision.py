"""A seeded random CLIP ViT-L/14 vision encoder, for tests and demos of image variation.

The original's image variation conditions Stage C on the `image_embeds` of OpenAI's CLIP ViT-L/14
(`CLIPVisionModelWithProjection`, 768 wide). The host's `CLIPVisionLoader` recognises a ViT-L/14 file
by `vision_model.encoder.layers.22.layer_norm1.weight` and a 257-entry position embedding
(comfy/clip_vision.py `load_clipvision_from_sd`) and builds the full 24-layer, 1024-wide model, so
the stand-in has the real size (0.30 B parameters, 0.6 GB in fp16) and the Hugging Face key names.
Weights are uniform random at CLIP's initialiser scale (std 0.02, layer norms at identity, biases
zero): embeddings are finite and depend on the image, and mean nothing.

Made once per machine under ~/.cache/stable-cascade-comfyui/standins/ and reused. Call
`standin_clip_vision_path()`, or run `python -m devtools.standin_clip_vision` from the repository
root to print the path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .standin_clip_g import cached_standin, seeded_clip_state_dict, standins_dir, transformer_layer_shapes

FORMAT_VERSION = 1
DEFAULT_SEED = 0

WIDTH = 1024
MLP_WIDTH = 4096
LAYERS = 24
PATCH = 14
IMAGE_SIZE = 224
PROJECTION = 768
POSITIONS = (IMAGE_SIZE // PATCH) ** 2 + 1  # 16x16 patches and the class token


def vit_l_14_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of a CLIP ViT-L/14 vision file (Hugging Face `CLIPVisionModelWithProjection`) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (WIDTH,),
        "vision_model.embeddings.patch_embedding.weight": (WIDTH, 3, PATCH, PATCH),
        "vision_model.embeddings.position_embedding.weight": (POSITIONS, WIDTH),
        "vision_model.pre_layrnorm.weight": (WIDTH,),
        "vision_model.pre_layrnorm.bias": (WIDTH,),
    }
    shapes.update(transformer_layer_shapes("vision_model", LAYERS, WIDTH, MLP_WIDTH))
    shapes["vision_model.post_layernorm.weight"] = (WIDTH,)
    shapes["vision_model.post_layernorm.bias"] = (WIDTH,)
    shapes["visual_projection.weight"] = (PROJECTION, WIDTH)
    return shapes


def make_clip_vision_state_dict(seed: int = DEFAULT_SEED, dtype=torch.float16) -> dict[str, torch.Tensor]:
    return seeded_clip_state_dict(vit_l_14_shapes(), seed, dtype)


def standin_clip_vision_path(seed: int = DEFAULT_SEED, directory: Path | None = None) -> Path:
    directory = Path(directory) if directory is not None else standins_dir()
    metadata = {"format": "pt", "standin": "random CLIP ViT-L/14 vision encoder", "seed": str(seed),
                "format_version": str(FORMAT_VERSION)}
    return cached_standin(directory / f"clip_vision_vit_l_14_standin_v{FORMAT_VERSION}_seed{seed}.safetensors",
                          lambda: make_clip_vision_state_dict(seed), metadata)


if __name__ == "__main__":
    print(standin_clip_vision_path())
