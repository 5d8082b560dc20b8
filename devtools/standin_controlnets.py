"""Seeded random Stable Cascade ControlNets with the released key layout, for tests and demos.

They project to 64 channels so that they fit the tiny stand-in Stage C (scripts/standin_models.py), and
the super-resolution one has narrower 'large' widths than the released file (its shape is read from the
file); everything else is the released architecture. The pictures they steer are noise.

    write_standin_controlnets(models_dir) -> {kind: path}
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .pack_env import register_pack
from .standin_models import fill_seeded

STANDIN_WIDTH = 64  # the tiny stand-in Stage C's width
CONFIGS = {
    "canny": dict(c_in=1, bottleneck_mode="effnet"),
    "inpainting": dict(c_in=4, bottleneck_mode="effnet"),
    "super_resolution": dict(c_in=16, bottleneck_mode="large", large_widths=[64, 32, 2, 64]),
    "identity": dict(c_in=512, bottleneck_mode="simple", proj_blocks=list(range(64))),
}


def standin_controlnet(kind, seed=0, c_proj=STANDIN_WIDTH):
    register_pack()
    from stable_cascade_pack.controlnet.module import ControlNet

    network = ControlNet(**CONFIGS[kind], c_proj=c_proj)
    return fill_seeded(network, seed, norm_scales_near_one=True)


def write_standin_controlnet(path, kind, seed=0, c_proj=STANDIN_WIDTH):
    """One stand-in file, bf16 like the released ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = standin_controlnet(kind, seed, c_proj)
    state_dict = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in network.state_dict().items()}
    save_file(state_dict, str(path), metadata={"standin": "tiny seeded random weights"})
    return path


def write_standin_controlnets(models_dir, kinds=("canny", "inpainting", "super_resolution"), seed=0):
    """Writes models_dir/controlnet/<kind>.safetensors (the released names); returns {kind: path}."""
    return {kind: write_standin_controlnet(Path(models_dir) / "controlnet" / f"{kind}.safetensors", kind, seed + index)
            for index, kind in enumerate(kinds)}


if __name__ == "__main__":
    for kind, path in write_standin_controlnets(sys.argv[1] if len(sys.argv) > 1 else "standin_models").items():
        print(f"{kind}: {path}")
