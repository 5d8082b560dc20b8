"""Will a sampling or a decode fit the machine? Estimated before anything is allocated.

A 16384x16384 picture passes the host's validation; sampled as is, Stage B needs terabytes of
activations and the machine grinds or the kernel kills the server. These estimates let a node
refuse up front with the largest size that fits, or decode in tiles where the network allows.

The activation estimate of the Stage B/C trunk counts, per network call, the down-path outputs kept
for the skips and the widest block's working set (the channel MLP expands 4x and keeps its GELU and
norm intermediates); attention is the memory-efficient kind and adds only its q/k/v/out projections.
It is an estimate, not a measurement: it is used to refuse sizes far beyond the machine, not to
squeeze the last pixel out of it.
"""
import math

import torch

import comfy.model_management as mm

RESIDENT_COPIES_PER_LEVEL = 3  # the level's skip output, the residual and the block's input
WIDEST_BLOCK_COPIES = 14  # 4c (Linear) + 4c (GELU) + 4c (GRN) + c + c: the ResBlock's channel MLP
BUDGET_SHARE = 0.9  # of the free memory: the rest is for what the estimate leaves out


class TooLarge(ValueError):
    """The requested size needs more memory than the machine has; the message gives one that fits."""


def gib(size_bytes):
    return f"{size_bytes / 1024**3:.1f} GiB"


def trunk_levels(network, stage):
    """[(channels, downscale of the level relative to the latent)] of a Stage B/C trunk (ours or the host's);
    empty for a network of another shape (nothing to estimate, nothing refused)."""
    if not hasattr(network, "down_blocks") or not hasattr(network, "embedding"):
        return []
    patch = getattr(network.embedding[0], "downscale_factor", 1)
    levels = []
    for index, level in enumerate(network.down_blocks):
        width = next((block.depthwise.out_channels for block in level if hasattr(block, "depthwise")), 0)
        # Stage B halves the resolution from level to level; Stage C keeps it (switch_level off).
        levels.append((width, patch * (2**index if stage == "b" else 1)))
    return levels


def sampling_bytes(network, stage, latent_shape, dtype_size, guided=True):
    """Estimated peak activation bytes of one network call on `latent_shape` [B, C, H, W]."""
    batch, _, height, width = latent_shape
    batch *= 2 if guided else 1
    resident = widest = 0
    for channels, downscale in trunk_levels(network, stage):
        pixels = batch * math.ceil(height / downscale) * math.ceil(width / downscale)
        resident += pixels * channels * RESIDENT_COPIES_PER_LEVEL
        widest = max(widest, pixels * channels * WIDEST_BLOCK_COPIES)
    return (resident + widest) * dtype_size


def budget_bytes(device):
    """What a computation's activations may use.

    On the CPU: the RAM still available (the weights already live there). On a GPU: the whole card,
    because the host unloads or offloads other weights to make room; refusing at the momentarily
    free memory would refuse sizes that fit once Stage C is unloaded for Stage B.
    """
    device = device if isinstance(device, torch.device) else torch.device(device)
    if device.type == "cpu":
        return mm.get_free_memory(device) * BUDGET_SHARE
    return mm.get_total_memory(device) * BUDGET_SHARE


def largest_fitting_picture(width, height, needed, budget, multiple=8):
    """(width, height) at the same aspect ratio whose memory (proportional to the area) fits `budget`."""
    scale = math.sqrt(budget / needed) if needed > 0 else 1.0
    return (max(multiple, int(width * scale) // multiple * multiple),
            max(multiple, int(height * scale) // multiple * multiple))


def refuse_if_too_large(node, what, needed, budget, picture_size, batch):
    """TooLarge with the largest picture size that fits, when `needed` exceeds `budget`."""
    if needed <= budget:
        return
    width, height = picture_size
    fit_width, fit_height = largest_fitting_picture(width, height, needed, budget)
    batch_hint = f", or a batch smaller than {batch}" if batch > 1 else ""
    raise TooLarge(
        f"{node}: {what} at about {width}x{height} (batch {batch}) needs about {gib(needed)} of memory, "
        f"but only {gib(budget)} is available on this machine. The largest picture that fits is about "
        f"{fit_width}x{fit_height}{batch_hint}; set that size in 'Empty Latents (Stable Cascade)'."
    )
