"""Tiny seeded random Stable Cascade models written as the released files are, for tests and demos.

No real weights can be downloaded here, so tests and the main job on a fresh machine use small
networks with the released key layout (original `in_proj` attention, bf16 Stage B/C like
`stage_c_bf16.safetensors`, fp32 Stage A / encoder / Previewer). They go through exactly the same
loaders as real files; the pictures they make are noise.

    write_standin_models(models_dir) -> {role: path}
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .pack_env import register_pack

# Widths are multiples of 64 with one head per 64 channels, like every released model; the text and
# image widths are the real ones, so the host's CLIP-G output fits.
TINY_CONFIGS = {
    "stage_c": ("StageC", dict(
        c_hidden=[64, 64], nhead=[1, 1], blocks=[[1, 1], [1, 1]], block_repeat=[[1, 1], [1, 1]],
        level_config=["CTA", "CTA"], c_cond=64, c_r=64, c_clip_seq=4, dropout=[0, 0],
    )),
    "stage_b": ("StageB", dict(
        c_hidden=[64, 64, 128, 128], nhead=[-1, -1, 2, 2], blocks=[[1, 1, 1, 1], [1, 1, 1, 1]],
        block_repeat=[[1, 1, 1, 1], [2, 2, 1, 1]], level_config=["CT", "CT", "CTA", "CTA"], c_cond=64,
        dropout=[0, 0, 0, 0],
    )),
    "stage_a": ("StageA", dict(levels=2, bottleneck_blocks=1, c_hidden=64, c_latent=4, codebook_size=64)),
    "effnet": ("EfficientNetEncoder", dict(c_latent=16)),  # the backbone has one fixed size
    "previewer": ("Previewer", dict(c_in=16, c_hidden=64, c_out=3)),
}

# The released file names, so the bundled example workflow finds them unchanged.
FILE_NAMES = {
    "stage_c": ("diffusion_models", "stage_c_bf16.safetensors"),
    "stage_b": ("diffusion_models", "stage_b_bf16.safetensors"),
    "stage_a": ("vae", "stage_a.safetensors"),
    "effnet": ("vae", "effnet_encoder.safetensors"),
    "previewer": ("vae", "previewer.safetensors"),
}
BF16_ROLES = {"stage_c", "stage_b"}


def _pack():
    register_pack()
    from stable_cascade_pack.stages import variants
    from stable_cascade_pack.stages.checkpoint import layouts

    return variants, layouts


def tiny_network(role, seed=0):
    """The tiny network for `role`, with every parameter seeded-random (none left at zero)."""
    variants, _ = _pack()
    class_name, kwargs = TINY_CONFIGS[role]
    network = variants.model_class(class_name)(**kwargs)
    return fill_seeded(network, seed)


def fill_seeded(network, seed, norm_scales_near_one=False):
    """Every floating-point tensor of `network` seeded-random at a scale that keeps activations alive
    through a tiny network (none left at zero); returns it in eval mode. With norm_scales_near_one,
    1-d weights (norm scales) are drawn around 1, so the signal survives deep stacks (EfficientNet)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif norm_scales_near_one and name.endswith(".weight") and tensor.dim() == 1:
                tensor.copy_(1.0 + torch.randn(tensor.shape, generator=generator) * 0.1)
            else:
                # Scale by fan-in so activations keep their size through the tiny network.
                fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                std = 0.05 if tensor.dim() <= 1 else min(0.5, fan_in**-0.5)
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)
    return network.eval()


def released_layout_state_dict(role, network):
    _, layouts = _pack()
    state_dict = network.state_dict()
    if role in ("stage_c", "stage_b"):
        state_dict = dict(layouts.convert_state_dict(state_dict, "pack", "original"))
    dtype = torch.bfloat16 if role in BF16_ROLES else None
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}


def write_standin_models(models_dir, seed=0, roles=tuple(TINY_CONFIGS)):
    """Writes the tiny stand-ins under `models_dir/<folder>/<released name>`; returns {role: path}."""
    models_dir = Path(models_dir)
    paths = {}
    for index, role in enumerate(roles):
        folder, filename = FILE_NAMES[role]
        path = models_dir / folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        network = tiny_network(role, seed=seed + index)
        save_file(released_layout_state_dict(role, network), str(path), metadata={"standin": "tiny seeded random weights"})
        paths[role] = path
    return paths


if __name__ == "__main__":
    for role, path in write_standin_models(sys.argv[1] if len(sys.argv) > 1 else "standin_models").items():
        print(f"{role}: {path}")
