"""Latent nodes: empty Stage C / Stage B latents for a picture size, Stage A decoding."""
import torch

import comfy.model_management as mm
import nodes as host_nodes
from comfy_api.latest import io

from ..stages.latent_sizes import COMPRESSION_MODES, ORIGINAL_COMPRESSION, stage_b_size, stage_c_compression, stage_c_size
from .choices import choice_problems

CATEGORY = "stable_cascade/latent"
SIZE_STEP = 8  # Stage B unshuffles its latent (image / 4) by 2, so image sides must be multiples of 8
MIN_SIZE = 256


def compression_inputs():
    """The compression setting the empty-latent and Stage C encode nodes share (optional: prompts written
    before it existed keep the original 42.67)."""
    return [
        io.Combo.Input("compression", options=list(COMPRESSION_MODES), default="original", optional=True,
                       tooltip="Stage C latent size: 'original' divides the picture by 42.67 (1024 -> 24, as the release); "
                               "'auto' keeps about 24x24 latent pixels (what Stage C was trained on) at any size and aspect "
                               "ratio, e.g. for 2048x2048 or wide pictures; 'number' divides by compression_number."),
        io.Float.Input("compression_number", default=ORIGINAL_COMPRESSION, min=4.0, max=128.0, step=0.01, round=0.01, optional=True,
                       tooltip="Picture pixels per Stage C latent pixel, used when compression is 'number' "
                               "(ComfyUI's own Stable Cascade nodes use 42; the original 42.67)."),
    ]


def latent_sizes(width, height, compression="original", compression_number=ORIGINAL_COMPRESSION):
    """(Stage C latent [h, w], Stage B latent [h, w]) for a picture size and compression setting."""
    factor = stage_c_compression(compression, compression_number, width, height)
    return stage_c_size(width, height, factor), stage_b_size(width, height)


def size_problem(name, value):
    """None when the models can take this side length, otherwise a message naming the nearest that work."""
    if value < MIN_SIZE:
        return f"{name} {value} is below the smallest size the cascade takes ({MIN_SIZE})"
    if value > host_nodes.MAX_RESOLUTION:
        return f"{name} {value} is above the largest size ComfyUI allows ({host_nodes.MAX_RESOLUTION})"
    if value % SIZE_STEP:
        below = value - value % SIZE_STEP
        above = below + SIZE_STEP
        nearest = " or ".join(str(v) for v in (below, above) if MIN_SIZE <= v <= host_nodes.MAX_RESOLUTION)
        return f"{name} {value} is not a multiple of {SIZE_STEP}, which Stage B needs; nearest sizes that work: {nearest}"
    return None


class EmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_EmptyLatent",
            display_name="Empty Latents (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Empty latents for a picture of this size: the Stage C latent (size / 42.67, rounded up: 24x24 for 1024x1024, "
                "or about 24x24 at any size with compression 'auto') and the Stage B latent (size / 4). Any aspect ratio; "
                "sides must be multiples of 8."
            ),
            inputs=[
                io.Int.Input("width", default=1024, min=MIN_SIZE, max=host_nodes.MAX_RESOLUTION, step=SIZE_STEP,
                             tooltip="Width of the final image in pixels (multiple of 8)."),
                io.Int.Input("height", default=1024, min=MIN_SIZE, max=host_nodes.MAX_RESOLUTION, step=SIZE_STEP,
                             tooltip="Height of the final image in pixels (multiple of 8)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="How many images to make at once."),
                *compression_inputs(),
            ],
            outputs=[
                io.Latent.Output(display_name="stage_c", tooltip="Empty Stage C latent [B,16,ceil(H/c),ceil(W/c)], c the compression."),
                io.Latent.Output(display_name="stage_b", tooltip="Empty Stage B latent [B,4,H/4,W/4]."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, compression="original"):
        # Naming the inputs here switches off the host's own min/max check: size_problem covers it.
        problems = [p for p in (size_problem("width", width), size_problem("height", height)) if p]
        choice = choice_problems(compression=(compression, COMPRESSION_MODES))
        problems += [choice] if choice is not True else []
        return "; ".join(problems) if problems else True

    @classmethod
    def execute(cls, width, height, batch_size, compression="original", compression_number=ORIGINAL_COMPRESSION):
        (c_h, c_w), (b_h, b_w) = latent_sizes(width, height, compression, compression_number)
        device = mm.intermediate_device()
        stage_c = torch.zeros(batch_size, 16, c_h, c_w, device=device)
        stage_b = torch.zeros(batch_size, 4, b_h, b_w, device=device)
        return io.NodeOutput({"samples": stage_c}, {"samples": stage_b})


class StageADecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageADecode",
            display_name="Stage A Decode (Stable Cascade)",
            category=CATEGORY,
            description="Decodes a Stage B latent into pixels with Stage A (4x larger), clamped to the image range.",
            inputs=[
                io.Vae.Input("stage_a", tooltip="Stage A VAE (from the Stage A loader, or the host's VAELoader with stage_a.safetensors)."),
                io.Latent.Input("stage_b", tooltip="The sampled Stage B latent."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Decoded images, 0..1.")],
        )

    @classmethod
    def execute(cls, stage_a, stage_b):
        samples = stage_b["samples"]
        if samples.shape[1] != 4:
            raise ValueError(f"'stage_b' has {samples.shape[1]} channels; a Stage B latent has 4 (is this a Stage C latent?)")
        # The host's own Stage A VAE (Load VAE) does not clamp: later nodes would see values outside 0..1.
        return io.NodeOutput(stage_a.decode(samples).clamp(0.0, 1.0))


NODES = [EmptyLatent, StageADecode]
