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

from .standin_clip_g import WEIGHT_STD, cached_standin, standins_dir

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
    for i in range(LAYERS):
        layer = f"vision_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}.self_attn.{proj}.weight"] = (WIDTH, WIDTH)
            shapes[f"{layer}.self_attn.{proj}.bias"] = (WIDTH,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"] = (WIDTH,)
            shapes[f"{layer}.{norm}.bias"] = (WIDTH,)
        shapes[f"{layer}.mlp.fc1.weight"] = (MLP_WIDTH, WIDTH)
        shapes[f"{layer}.mlp.fc1.bias"] = (MLP_WIDTH,)
        shapes[f"{layer}.mlp.fc2.weight"] = (WIDTH, MLP_WIDTH)
        shapes[f"{layer}.mlp.fc2.bias"] = (WIDTH,)
    shapes["vision_model.post_layernorm.weight"] = (WIDTH,)
    shapes["vision_model.post_layernorm.bias"] = (WIDTH,)
    shapes["visual_projection.weight"] = (PROJECTION, WIDTH)
    return shapes


def make_clip_vision_state_dict(seed: int = DEFAULT_SEED, dtype=torch.float16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    bound = WEIGHT_STD * 3**0.5  # uniform(-b, b) has std b/sqrt(3)
    state_dict = {}
    for name, shape in vit_l_14_shapes().items():
        if name.endswith(".bias"):
            tensor = torch.zeros(shape, dtype=dtype)
        elif "norm" in name:
            tensor = torch.ones(shape, dtype=dtype)
        else:
            tensor = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator).to(dtype)
        state_dict[name] = tensor
    return state_dict


def standin_clip_vision_path(seed: int = DEFAULT_SEED, directory: Path | None = None) -> Path:
    directory = Path(directory) if directory is not None else standins_dir()
    metadata = {"format": "pt", "standin": "random CLIP ViT-L/14 vision encoder", "seed": str(seed),
                "format_version": str(FORMAT_VERSION)}
    return cached_standin(directory / f"clip_vision_vit_l_14_standin_v{FORMAT_VERSION}_seed{seed}.safetensors",
                          lambda: make_clip_vision_state_dict(seed), metadata)


if __name__ == "__main__":
    print(standin_clip_vision_path())
