"""ControlNet nodes: load a Stable Cascade ControlNet, apply it to the Stage C prompts with its control
input made from an image, and composite an inpainting result back into the original."""
import os

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import torch
from comfy_api.latest import io

from ..controlnet.canny import canny_control
from ..controlnet.checkpoint import controlnet_spec
from ..controlnet.inpaint import composite_outside_mask, inpaint_control
from ..controlnet.module import ControlNet
from ..controlnet.super_resolution import super_resolution_control
from ..stages.checkpoint import CheckpointError, locate, read_safetensors_header
from .cascade_control import CascadeControlNet, as_cascade_control
from .choices import choice_problems
from .host_models import assign_weights
from .model_files import filenames, full_path, read_state_dict

CATEGORY = "stable_cascade/controlnet"
FOLDERS = ("controlnet",)
STORAGE_DTYPES = [torch.bfloat16, torch.float32]


def load_cascade_controlnet(filename):
    path = full_path(filename, *FOLDERS)
    name = os.path.basename(path)
    if path.lower().endswith((".safetensors", ".sft")):
        locate(read_safetensors_header(path), "controlnet", name)  # refuses any other file before reading weights
    state_dict = read_state_dict(path)
    locate(state_dict, "controlnet", name)
    try:
        spec = controlnet_spec(state_dict, name)
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    load_device = mm.get_torch_device()
    stored = comfy.utils.weight_dtype(state_dict)
    dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(state_dict), supported_dtypes=STORAGE_DTYPES,
                          weight_dtype=stored)
    network = ControlNet(**spec.constructor_kwargs(), dtype=dtype, device=torch.device("meta"),
                         operations=comfy.ops.manual_cast)
    assign_weights(network, state_dict, dtype, f"ControlNet {name}")
    patcher = comfy.model_patcher.ModelPatcher(network.eval(), load_device=load_device, offload_device=mm.unet_offload_device())
    return CascadeControlNet(patcher, spec, name)


class ControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_ControlNetLoader",
            display_name="Load ControlNet (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Loads a Stable Cascade ControlNet from models/controlnet and tells its use from the file: canny, "
                "inpainting/outpainting, super-resolution or face identity. Refuses other ControlNets (SD1.5/SDXL) with a "
                "message saying what the file is. The released ones fit the 3.6B Stage C only. Outputs the host's "
                "CONTROL_NET: apply it with 'Apply ControlNet (Stable Cascade)' (or the host's Apply ControlNet)."
            ),
            inputs=[io.Combo.Input("control_net_name", options=filenames(*FOLDERS),
                                   tooltip="canny.safetensors, inpainting.safetensors or super_resolution.safetensors "
                                           "from the Stable Cascade release.")],
            outputs=[io.ControlNet.Output(display_name="control_net", tooltip="The ControlNet, loaded with Stage C when sampling.")],
        )

    @classmethod
    def validate_inputs(cls, control_net_name):
        return choice_problems(control_net_name=(control_net_name, filenames(*FOLDERS)))

    @classmethod
    def execute(cls, control_net_name):
        return io.NodeOutput(load_cascade_controlnet(control_net_name))


def _rgb(image, what):
    channels = image.shape[-1]
    if channels != 3:
        extra = " (RGBA: drop the alpha, e.g. with the host's 'Split Image with Alpha')" if channels == 4 else ""
        raise ValueError(f"the {what} ControlNet takes an RGB image, but 'image' has {channels} channels{extra}")
    return image.movedim(-1, 1).float()


def _mask_for(mask, image):
    """A host MASK ([H,W] or [B,H,W]) as [B,1,H,W], checked against the image [B,H,W,C]."""
    if mask is None:
        raise ValueError("the inpainting ControlNet needs a 'mask' (white = the region to regenerate): connect one, "
                         "e.g. from the image editor's mask or the host's 'Pad Image for Outpainting'")
    mask = mask.reshape(-1, *mask.shape[-2:]) if mask.dim() >= 2 else mask
    if tuple(mask.shape[-2:]) != tuple(image.shape[1:3]):
        raise ValueError(
            f"'mask' is {mask.shape[-1]}x{mask.shape[-2]} but 'image' is {image.shape[2]}x{image.shape[1]} (width x height): "
            "they must have the same size")
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"'mask' has a batch of {mask.shape[0]} but 'image' has {image.shape[0]}")
    return mask.unsqueeze(1).float()


def control_input(kind, image, mask=None, stage_c_vae=None):
    """The control input the ControlNet of `kind` takes, from a host IMAGE [B,H,W,C] (and MASK / VAE)."""
    if kind == "canny":
        return canny_control(_rgb(image, "canny"))
    if kind == "inpainting":
        return inpaint_control(_rgb(image, "inpainting"), _mask_for(mask, image) > 0.5)
    if kind == "super_resolution":
        if stage_c_vae is None:
            raise ValueError("the super-resolution ControlNet needs 'stage_c_vae' (the EfficientNet encoder, from "
                             "'Load EfficientNet encoder + Previewer') to encode the low-resolution image")
        latent = stage_c_vae.encode(image[..., :3])
        if latent.dim() != 4 or latent.shape[1] != 16:
            raise ValueError(f"'stage_c_vae' encoded the image to shape {list(latent.shape)}, not a 16-channel Stage C latent: "
                             "connect the EfficientNet encoder (Stage C VAE)")
        return super_resolution_control(latent.float())
    raise ValueError(
        "the face-identity ControlNet takes a map of ArcFace face embeddings, which need InsightFace models this pack does "
        "not include; its weights were never released either (see this node's help)")


class ControlNetApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_ControlNetApply",
            display_name="Apply ControlNet (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Attaches a Stable Cascade ControlNet to the Stage C prompts, making its control input from 'image' as the "
                "original does: canny edges (resized to 224, thresholds 100/200), the inpainting hint (masked area white plus "
                "the mask), or the EfficientNet latent for 2x super-resolution. Works in the Stage C GDF sampler and the "
                "host's KSampler."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Stage C prompt (CLIPTextEncode with a 'stable_cascade' CLIP)."),
                io.Conditioning.Input("negative", tooltip="Stage C negative prompt; gets the same control, as in the original."),
                io.ControlNet.Input("control_net", tooltip="A Stable Cascade ControlNet from 'Load ControlNet (Stable Cascade)'."),
                io.Image.Input("image", tooltip="canny: the picture whose edges to follow. inpainting: the picture to edit "
                                                "(with 'mask'). super-resolution: the picture to upscale."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Multiplies the ControlNet's residuals; 0 is no control. The original uses 1."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where in the sampling run the control starts (0 = the first, noisiest step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where in the sampling run the control stops (1 = the last step)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Inpainting/outpainting only: 1 (white) where the picture is regenerated; same size as 'image'."),
                io.Vae.Input("stage_c_vae", optional=True,
                             tooltip="Super-resolution only: the EfficientNet encoder (Stage C VAE) that encodes 'image'."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="The prompt with the ControlNet attached."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt with the ControlNet attached."),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        # Naming these inputs switches the host's own min/max checks off for them. Linked ones are unknown yet (None).
        if start_percent is None or end_percent is None:
            return True
        for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
            if not 0.0 <= value <= 1.0:
                return f"{name} must be between 0 and 1, got {value}"
        if start_percent > end_percent:
            return f"start_percent ({start_percent}) is after end_percent ({end_percent}): the control would never act"
        return True

    @classmethod
    def execute(cls, positive, negative, control_net, image, strength, start_percent, end_percent, mask=None, stage_c_vae=None):
        control = as_cascade_control(control_net)
        hint = control_input(control.spec.kind, image, mask, stage_c_vae)
        applied = control.copy().set_cond_hint(hint, strength, (start_percent, end_percent))
        return io.NodeOutput(*attach(applied, [positive, negative]))


def attach(control, conditionings):
    """Each conditioning entry with `control` attached after any ControlNet it already had (as the host chains them)."""
    by_previous = {}
    out = []
    for conditioning in conditionings:
        entries = []
        for tokens, extras in conditioning:
            extras = extras.copy()
            previous = extras.get("control")
            if previous not in by_previous:
                by_previous[previous] = control.copy().set_previous_controlnet(previous)
            extras["control"] = by_previous[previous]
            extras["control_apply_to_uncond"] = False
            entries.append([tokens, extras])
        out.append(entries)
    return out


class InpaintComposite(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_InpaintComposite",
            display_name="Inpaint Composite (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Puts the original picture back outside the mask: the generated picture is kept only where the mask is "
                "white. The original and the mask are resized to the generated picture's size (Stable Cascade's output "
                "size differs from its input's)."
            ),
            inputs=[
                io.Image.Input("generated", tooltip="The decoded result of the inpainting/outpainting run."),
                io.Image.Input("original", tooltip="The picture given to the ControlNet (for outpainting: the padded canvas)."),
                io.Mask.Input("mask", tooltip="The mask given to the ControlNet: 1 (white) where the picture was regenerated."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Generated inside the mask, original outside.")],
        )

    @classmethod
    def execute(cls, generated, original, mask):
        original_bchw = original[..., :3].movedim(-1, 1).float()
        mask = mask.reshape(-1, 1, *mask.shape[-2:]).float()
        if tuple(mask.shape[-2:]) != tuple(original_bchw.shape[-2:]):
            raise ValueError(
                f"'mask' is {mask.shape[-1]}x{mask.shape[-2]} but 'original' is {original_bchw.shape[-1]}x{original_bchw.shape[-2]}: "
                "use the mask and picture given to the ControlNet")
        result = composite_outside_mask(generated.movedim(-1, 1).float(), original_bchw, mask)
        return io.NodeOutput(result.movedim(1, -1).to(generated.dtype))


NODES = [ControlNetLoader, ControlNetApply, InpaintComposite]
