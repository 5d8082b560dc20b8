"""Images in: an IMAGE -> the Stage C latent (EfficientNet encoder) or the Stage B latent (Stage A)."""
import torch

import comfy.model_management as mm
from comfy_api.latest import io

from ..stages.effnet import resize_for_encoder
from ..stages.latent_sizes import ORIGINAL_COMPRESSION, encoder_input_size
from .input_checks import check_finite_numbers, check_vae
from .latents import MIN_SIZE, SIZE_STEP, compression_inputs, latent_sizes

CATEGORY = "stable_cascade/latent"
STAGE_A_MIN_SIZE = SIZE_STEP


def rgb_images(image, input_name="image"):
    """The IMAGE as [B,H,W,3], or a message saying what arrived instead and how to make it an RGB image."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"'{input_name}' is a {type(image).__name__}; an IMAGE tensor [batch, height, width, 3] was expected")
    if image.dim() == 3:
        raise ValueError(
            f"'{input_name}' is a 3-D tensor {list(image.shape)}, which looks like a MASK; an IMAGE is [batch, height, width, 3]. "
            "Turn a mask into an image with 'Convert Mask to Image' first"
        )
    if image.dim() != 4:
        raise ValueError(f"'{input_name}' has shape {list(image.shape)}; an IMAGE is [batch, height, width, 3]")
    channels = image.shape[-1]
    if channels == 4:
        raise ValueError(
            f"'{input_name}' has 4 channels (RGBA); the encoder takes RGB. Split the alpha off with 'Split Image with Alpha' first"
        )
    if channels != 3:
        raise ValueError(f"'{input_name}' has {channels} channels; an RGB IMAGE has 3")
    return image


def center_crop_to_multiple(image, step):
    """The centre of a [B,H,W,C] image with both sides rounded down to a multiple of `step`."""
    height, width = image.shape[1] - image.shape[1] % step, image.shape[2] - image.shape[2] % step
    top, left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    return image[:, top:top + height, left:left + width]


class StageCEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageCEncode",
            display_name="Stage C Encode (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Encodes images into Stage C latents with the EfficientNet encoder, prepared as the original does (antialiased "
                "resize so that the latent has exactly the size of an empty latent of this picture size, ImageNet normalisation). "
                "Also gives the empty Stage B latent of that size. For image-to-image (sample with denoise below 1) and for "
                "reconstructing an image through Stage B."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The pictures to encode (RGB). Sides are cropped to multiples of 8; at least 256 px."),
                io.Vae.Input("vae", tooltip="Stage C VAE with the EfficientNet encoder (Load Stage C VAE (Stable Cascade), or the "
                                            "host's Load VAE with effnet_encoder.safetensors)."),
                *compression_inputs(),
            ],
            outputs=[
                io.Latent.Output(display_name="stage_c", tooltip="The encoded Stage C latent [B,16,ceil(H/c),ceil(W/c)]."),
                io.Latent.Output(display_name="stage_b", tooltip="Empty Stage B latent [B,4,H/4,W/4] of the same picture size."),
            ],
        )

    @classmethod
    def execute(cls, image, vae, compression="original", compression_number=ORIGINAL_COMPRESSION):
        check_finite_numbers("Stage C Encode (Stable Cascade)", compression_number=compression_number)
        image = rgb_images(image)
        if min(image.shape[1:3]) < MIN_SIZE:
            raise ValueError(
                f"the image is {image.shape[2]}x{image.shape[1]}, smaller than the {MIN_SIZE} px per side the cascade takes; "
                "scale it up first (e.g. 'Upscale Image')"
            )
        check_vae("Stage C Encode (Stable Cascade)", "vae", vae, "stage_c_encoder")
        picture = center_crop_to_multiple(image, SIZE_STEP)
        height, width = picture.shape[1:3]
        stage_c_hw, stage_b_hw = latent_sizes(width, height, compression, compression_number)
        resized = resize_for_encoder(picture.movedim(-1, 1), encoder_input_size(stage_c_hw)).movedim(1, -1)
        stage_c = vae.encode(resized)
        stage_b = torch.zeros(image.shape[0], 4, *stage_b_hw, device=mm.intermediate_device())
        return io.NodeOutput({"samples": stage_c}, {"samples": stage_b})


class StageAEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageAEncode",
            display_name="Stage A Encode (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Encodes images into Stage B latents with Stage A (4x smaller, nearly lossless). Decode it again with Stage A "
                "Decode, or give it to the Stage B sampler as the latent to start from."
            ),
            inputs=[
                io.Vae.Input("stage_a", tooltip="Stage A VAE (from the Stage A loader, or the host's VAELoader with stage_a.safetensors)."),
                io.Image.Input("image", tooltip="The pictures to encode (RGB). Sides are cropped to multiples of 8."),
            ],
            outputs=[io.Latent.Output(display_name="stage_b", tooltip="Stage B latent [B,4,H/4,W/4].")],
        )

    @classmethod
    def execute(cls, stage_a, image):
        image = rgb_images(image)
        if min(image.shape[1:3]) < STAGE_A_MIN_SIZE:
            raise ValueError(f"the image is {image.shape[2]}x{image.shape[1]}; Stage A needs at least {STAGE_A_MIN_SIZE} px per side")
        check_vae("Stage A Encode (Stable Cascade)", "stage_a", stage_a, "stage_a")
        return io.NodeOutput({"samples": stage_a.encode(center_crop_to_multiple(image, SIZE_STEP))})


NODES = [StageCEncode, StageAEncode]
