"""Latent nodes: empty Stage C / Stage B latents for a picture size, Stage A decoding."""
import logging

import torch

import comfy.model_management as mm
import nodes as host_nodes
from comfy_api.latest import io

from ..stages.latent_sizes import COMPRESSION_MODES, ORIGINAL_COMPRESSION, stage_b_size, stage_c_compression, stage_c_size
from . import memory_limits
from .choices import choice_problems
from .input_checks import STAGE_B_LATENT, check_finite_numbers, check_finite_result, check_latent, check_vae
from .interrupts import interruptible
from .memory_limits import TooLarge, gib, largest_fitting_picture, refuse_if_too_large

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
        check_finite_numbers("Empty Latents (Stable Cascade)", compression_number=compression_number)
        (c_h, c_w), (b_h, b_w) = latent_sizes(width, height, compression, compression_number)
        device = mm.intermediate_device()
        needed = batch_size * (16 * c_h * c_w + 4 * b_h * b_w) * 4
        refuse_if_too_large("Empty Latents (Stable Cascade)", "the empty latents", needed, memory_limits.budget_bytes(device),
                            (width, height), batch_size)
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
        node = "Stage A Decode (Stable Cascade)"
        check_vae(node, "stage_a", stage_a, "stage_a")
        samples = check_latent(node, "stage_b", stage_b, STAGE_B_LATENT)
        with interruptible(stage_a.first_stage_model):  # a large picture is one long call otherwise
            image = decode_within_memory(node, stage_a, samples)
        check_finite_result(node, image, "the decoded image",
                            "the Stage A file is corrupt (NaN weights) or it ran in a dtype that overflowed; "
                            "load stage_a.safetensors again with 'Load Stage A VAE (Stable Cascade)'.")
        # The host's own Stage A VAE (Load VAE) does not clamp: later nodes would see values outside 0..1.
        return io.NodeOutput(image.clamp(0.0, 1.0))


DECODE_TILE = 64  # latent pixels per tile side (256 picture pixels), the host's default


def decode_within_memory(node, vae, samples):
    """Decodes whole when it fits, in tiles when only tiles fit; refuses when not even the picture fits.

    Stage A is convolutional, so tiles (with the host's overlapping three-pass blend) stay faithful;
    each tile reports progress, which is also where the host's interrupt lands.
    """
    budget = memory_limits.budget_bytes(vae.device)
    needed = vae.memory_used_decode(samples.shape, vae.vae_dtype)
    if needed <= budget:
        return vae.decode(samples)
    batch, _, height, width = samples.shape
    scale = vae.upscale_ratio
    picture_bytes = batch * 3 * height * width * scale * scale * 4
    tile_bytes = vae.memory_used_decode((1, samples.shape[1], DECODE_TILE, DECODE_TILE), vae.vae_dtype)
    # The tiled decode keeps the picture and its blending weights (about 3 pictures) beside one tile.
    if 3 * picture_bytes + tile_bytes > budget:
        fit = largest_fitting_picture(width * scale, height * scale, 3 * picture_bytes + tile_bytes, budget)
        raise TooLarge(
            f"{node}: a {width * scale}x{height * scale} picture (batch {batch}) needs about {gib(3 * picture_bytes)} "
            f"even when decoded in tiles, but only {gib(budget)} is available. The largest that fits is about "
            f"{fit[0]}x{fit[1]}; set that size in 'Empty Latents (Stable Cascade)'."
        )
    logging.warning(f"[stable cascade] {node}: decoding needs about {gib(needed)} at once, {gib(budget)} is available: "
                    "decoding in tiles")
    return vae.decode_tiled(samples, tile_x=DECODE_TILE, tile_y=DECODE_TILE, overlap=16)


NODES = [EmptyLatent, StageADecode]
