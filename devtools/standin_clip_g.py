"""A seeded random CLIP-G text encoder, for tests and demos that cannot download the real one.

The host's `CLIPLoader` (type `stable_cascade`) accepts any single file in the CLIP-G layout
(`text_model.encoder.layers.30.mlp.fc1.weight` is what it looks for, comfy/sd.py `detect_te_model`)
and builds `StableCascadeClipModel` from it: 32 layers, width 1280, 0.69 B parameters. This module
writes such a file with uniform random weights of the scale CLIP's own initialiser uses (std 0.02,
layer norms at identity, biases zero), so activations stay finite through all 32 layers in fp16 and
fp32. The values mean nothing: prompts encode to noise, which is all a plumbing test needs.

The file (1.4 GB, fp16) is made once per machine under ~/.cache/stable-cascade-comfyui/standins/
and reused; making it takes about ten seconds on two cores. Call `standin_clip_g_path()`, or run
`python -m devtools.standin_clip_g` from the repository root to print the path.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from .locks import exclusive_lock
from .pack_env import ENV_DIR

# Bump when the layout or the values change, so that a stale cached file is not reused.
FORMAT_VERSION = 1
DEFAULT_SEED = 0

WIDTH = 1280
MLP_WIDTH = 5120
LAYERS = 32
VOCAB = 49408
CONTEXT = 77
WEIGHT_STD = 0.02


def standins_dir() -> Path:
    return ENV_DIR / "standins"


def transformer_layer_shapes(prefix: str, layers: int, width: int, mlp_width: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of a Hugging Face CLIP encoder's layers (text and vision alike)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        layer = f"{prefix}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}.self_attn.{proj}.weight"] = (width, width)
            shapes[f"{layer}.self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}.{norm}.weight"] = (width,)
            shapes[f"{layer}.{norm}.bias"] = (width,)
        shapes[f"{layer}.mlp.fc1.weight"] = (mlp_width, width)
        shapes[f"{layer}.mlp.fc1.bias"] = (mlp_width,)
        shapes[f"{layer}.mlp.fc2.weight"] = (width, mlp_width)
        shapes[f"{layer}.mlp.fc2.bias"] = (width,)
    return shapes


def clip_g_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of a CLIP-G text encoder file (Hugging Face `CLIPTextModel` names) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (VOCAB, WIDTH),
        "text_model.embeddings.position_embedding.weight": (CONTEXT, WIDTH),
        **transformer_layer_shapes("text_model", LAYERS, WIDTH, MLP_WIDTH),
    }
    shapes["text_model.final_layer_norm.weight"] = (WIDTH,)
    shapes["text_model.final_layer_norm.bias"] = (WIDTH,)
    shapes["text_projection.weight"] = (WIDTH, WIDTH)
    return shapes


def seeded_clip_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Random weights at CLIP's initialiser scale for these keys, the same for the same seed (and
    torch's CPU generator): biases zero, norms at identity, the rest uniform with std WEIGHT_STD."""
    generator = torch.Generator().manual_seed(seed)
    bound = WEIGHT_STD * 3**0.5  # uniform(-b, b) has std b/sqrt(3); uniform is ~2x cheaper than normal
    state_dict = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            tensor = torch.zeros(shape, dtype=dtype)
        elif "norm" in name:
            tensor = torch.ones(shape, dtype=dtype)
        else:
            tensor = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            tensor = tensor.to(dtype)
        state_dict[name] = tensor
    return state_dict


def make_clip_g_state_dict(seed: int = DEFAULT_SEED, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """The random weights, the same for the same seed (and torch's CPU generator)."""
    return seeded_clip_state_dict(clip_g_shapes(), seed, dtype)


def standin_clip_g_path(seed: int = DEFAULT_SEED, directory: Path | None = None) -> Path:
    """The path of the stand-in CLIP-G file, made first if it is not there yet.

    Safe to call from several processes at once: one makes the file under a lock, the others wait
    for it; the file appears under its final name only when complete.
    """
    directory = Path(directory) if directory is not None else standins_dir()
    metadata = {"format": "pt", "standin": "random CLIP-G text encoder", "seed": str(seed),
                "format_version": str(FORMAT_VERSION)}
    return cached_standin(directory / f"clip_g_standin_v{FORMAT_VERSION}_seed{seed}.safetensors",
                          lambda: make_clip_g_state_dict(seed), metadata)


def cached_standin(path: Path, make_state_dict, metadata: dict[str, str]) -> Path:
    """`path`, written from `make_state_dict()` first if it is not there yet (one process makes it
    under a lock, the others wait; the file appears under its final name only when complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        return path
    with exclusive_lock(path.parent / f".{path.name}.lock"):
        if path.is_file():  # made by another process while this one waited
            return path
        started = time.perf_counter()
        state_dict = make_state_dict()
        partial = path.with_name(path.name + f".partial-{os.getpid()}")
        save_file(state_dict, str(partial), metadata=metadata)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
        print(f"[standins] wrote {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


if __name__ == "__main__":
    print(standin_clip_g_path())
