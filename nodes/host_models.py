"""Wrapping the pack's networks in the host's own model objects.

Stage C and Stage B become the host's `MODEL` (a ModelPatcher around a `StableCascade_C`/`_B`
BaseModel whose `diffusion_model` is our network): the host then loads, offloads and casts them
like its own, its KSampler can sample them, and LoRA patches reach them by the usual keys.
Stage A and the EfficientNet encoder / Previewer pair become the host's `VAE`, so the host's
VAEDecode/VAEEncode and StableCascade_StageC_VAEEncode accept them too.
"""
import logging
import os

import torch

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils

from ..stages.effnet import EfficientNetEncoder
from ..stages.fp16_rescale import Fp16RescaleError
from ..stages.previewer import Previewer
from ..stages.stage_a import StageA
from ..stages.stage_b import StageB
from ..stages.stage_c import StageC
from . import fp16_scales


def _model_classes(host_config_class, host_model_class, network_class):
    """A host model config + BaseModel pair that builds `network_class` as the diffusion model."""

    def build_network(dtype=None, device=None, **kwargs):
        # Built without memory: the weights are assigned from the checkpoint afterwards.
        network = network_class(dtype=dtype, device=torch.device("meta"), **kwargs)
        network.dtype = dtype  # the host reads the storage dtype from here (BaseModel.get_dtype)
        return network

    class PackModel(host_model_class):
        def __init__(self, model_config, device=None):
            comfy.model_base.BaseModel.__init__(
                self, model_config, comfy.model_base.ModelType.STABLE_CASCADE, device=device, unet_model=build_network
            )

    class PackModelConfig(host_config_class):
        def get_model(self, state_dict=None, prefix="", device=None):
            return PackModel(self, device=device)

    PackModel.__name__ = f"Pack{host_model_class.__name__}"
    PackModelConfig.__name__ = f"Pack{host_config_class.__name__}"
    return PackModelConfig


STAGE_C_CONFIG = _model_classes(comfy.supported_models.Stable_Cascade_C, comfy.model_base.StableCascade_C, StageC)
STAGE_B_CONFIG = _model_classes(comfy.supported_models.Stable_Cascade_B, comfy.model_base.StableCascade_B, StageB)

WEIGHT_DTYPES = {
    "default": None,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def build_diffusion_model(stage, network_state_dict, network_config, weight_dtype=None, source_path=None):
    """A host `MODEL` (ModelPatcher) holding our Stage C or Stage B network with these weights.

    The storage dtype follows the host's policy (`unet_dtype`) unless `weight_dtype` is given; the
    compute dtype is then chosen by the host among the stage's supported dtypes. The host allows
    Stage C bf16 and fp32 only (its plain activations overflow in fp16); ours also offers fp16, after
    bf16 (so on GPUs without bf16), with its stream rescaled by factors calibrated from the file at
    `source_path` (fp16_scales). Where the calibration finds that fp16 cannot work, Stage C falls
    back to the host's choice, or, if the user asked for fp16, the load fails saying why.
    """
    model = _build_model(stage, network_state_dict, network_config, weight_dtype, stage_c_fp16=stage == "c")
    network = model.diffusion_model
    if stage == "c" and torch.float16 in model.model_config.supported_inference_dtypes:
        try:
            network.fp16_block_scales = fp16_scales.block_scales_for(network, source_path)
        except Fp16RescaleError as error:
            name = os.path.basename(source_path) if source_path else "this Stage C"
            if weight_dtype == torch.float16:
                raise Fp16RescaleError(f"{name} cannot run in fp16: {error}") from error
            logging.warning("Stable Cascade pack: %s cannot run in fp16 (%s); using bf16/fp32 instead", name, error)
            model = _build_model(stage, network_state_dict, network_config, weight_dtype, stage_c_fp16=False)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def _build_model(stage, network_state_dict, network_config, weight_dtype, stage_c_fp16):
    """The host BaseModel; with `stage_c_fp16`, fp16 stays among Stage C's supported dtypes only
    if the host then picks it to compute in."""
    config_class = {"c": STAGE_C_CONFIG, "b": STAGE_B_CONFIG}[stage]
    model_config = config_class(dict(network_config))
    supported = list(model_config.supported_inference_dtypes)
    if stage_c_fp16:
        supported.insert(supported.index(torch.float32), torch.float16)
    load_device = mm.get_torch_device()
    if weight_dtype is None:
        weight_dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(network_state_dict),
                                     supported_dtypes=supported, weight_dtype=comfy.utils.weight_dtype(network_state_dict))
    compute_dtype = mm.unet_manual_cast(weight_dtype, load_device, supported)
    if stage_c_fp16 and (compute_dtype or weight_dtype) != torch.float16:
        supported.remove(torch.float16)
        compute_dtype = mm.unet_manual_cast(weight_dtype, load_device, supported)
    model_config.supported_inference_dtypes = supported
    model_config.set_inference_dtype(weight_dtype, compute_dtype)

    model = model_config.get_model(network_state_dict)
    assign_weights(model.diffusion_model, network_state_dict, weight_dtype, f"Stage {stage.upper()}")
    return model


def assign_weights(network, state_dict, dtype, what):
    """Puts the checkpoint's own tensors into a network built on the meta device.

    Tensors already in `dtype` are used as they are (memory-mapped file pages, no copy); others are
    converted one by one, so loading never holds a second full copy of the weights.
    """
    def stored(tensor):
        return tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor

    weights = {name: stored(tensor) for name, tensor in state_dict.items()}
    missing, unexpected = network.load_state_dict(weights, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"the weights do not fit the {what} network built from them (missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    left_on_meta = [name for name, tensor in [*network.named_parameters(), *network.named_buffers()] if tensor.is_meta]
    if left_on_meta:
        raise ValueError(f"the {what} network has tensors the checkpoint does not provide: {left_on_meta[:5]}")
    return network


class StageAForHost(torch.nn.Module):
    """Stage A seen through the host's VAE conventions.

    The host keeps Stage B latents as the raw (BatchNorm-normalised) encoder output and folds the
    original 0.43 scaling into Stage B's latent format, so a host VAE encodes to `z * 0.43` and
    decodes from it. Our StageA speaks the original convention (z); this adapter converts.
    """

    def __init__(self, stage_a):
        super().__init__()
        self.stage_a = stage_a

    def encode(self, images):
        return self.stage_a.encode(images) * self.stage_a.scale_factor

    def decode(self, host_latent):
        return self.stage_a.decode(host_latent / self.stage_a.scale_factor)


class StageCCoderForHost(torch.nn.Module):
    """EfficientNet encoder + Previewer seen through the host's VAE conventions.

    The host's VAE feeds images in [-1, 1] to `encode` and maps `decode`'s output from [-1, 1] back
    to [0, 1]; the original Previewer outputs [0, 1] directly, hence the affine map in `decode`.
    """

    def __init__(self, encoder=None, previewer=None):
        super().__init__()
        self.encoder = encoder
        self.previewer = previewer

    def encode(self, images_minus1_1):
        if self.encoder is None:
            raise ValueError("this Stage C VAE has no EfficientNet encoder: load effnet_encoder.safetensors too")
        return self.encoder(images_minus1_1)

    def decode(self, stage_c_latent):
        if self.previewer is None:
            raise ValueError("this Stage C VAE has no Previewer: load previewer.safetensors too")
        return self.previewer(stage_c_latent) * 2.0 - 1.0


def _host_vae(module, *, downscale_ratio, upscale_ratio, latent_channels, to_model_input, from_model_output,
              encode_values_per_pixel, decode_values_per_pixel):
    """A host `VAE` object around one of the adapters above.

    comfy.sd.VAE only builds itself from a state dict it recognises; the cheapest one it knows is
    the weightless pixel-space converter, so we let it build that and then put our module and our
    ratios in place. Everything else (tiling, batching, memory estimates, offload) stays the host's.
    """
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    dtype = mm.vae_dtype(vae.device, vae.working_dtypes)
    vae.first_stage_model = module.eval().to(dtype)
    vae.vae_dtype = dtype
    vae.downscale_ratio = downscale_ratio
    vae.upscale_ratio = upscale_ratio
    vae.latent_channels = latent_channels
    vae.process_input = to_model_input
    vae.process_output = from_model_output
    # What the host reserves before encoding an image [B,C,H,W] / decoding a latent [B,C,h,w].
    vae.memory_used_encode = lambda shape, dtype: encode_values_per_pixel * shape[2] * shape[3] * mm.dtype_size(dtype)
    vae.memory_used_decode = lambda shape, dtype: decode_values_per_pixel * shape[2] * shape[3] * mm.dtype_size(dtype)
    vae.size = None
    vae.patcher = comfy.model_patcher.ModelPatcher(
        vae.first_stage_model, load_device=vae.device, offload_device=mm.vae_offload_device()
    )
    vae.model_size()
    return vae


def _load_strict(network, state_dict, what):
    missing, unexpected = network.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the {what} network (missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    return network


def build_stage_a_vae(state_dict, config):
    stage_a = _load_strict(StageA(**config), state_dict, "Stage A")
    return _host_vae(
        StageAForHost(stage_a),
        downscale_ratio=4,
        upscale_ratio=4,
        # Peak activations per input pixel, measured with the released Stage A (fp32, 1024² image).
        encode_values_per_pixel=550,
        decode_values_per_pixel=8600,
        latent_channels=config.get("c_latent", 4),
        to_model_input=lambda image: image,
        # Stage A decodes to roughly [0, 1] without clamping; images must not leave that range.
        from_model_output=lambda image: image.clamp(0.0, 1.0),
    )


def build_stage_c_coder_vae(encoder_parts=None, previewer_parts=None):
    """`encoder_parts` / `previewer_parts`: (state_dict, config) pairs; either may be None."""
    encoder = previewer = None
    if encoder_parts is not None:
        encoder = _load_strict(EfficientNetEncoder(**encoder_parts[1]), encoder_parts[0], "EfficientNet encoder")
    if previewer_parts is not None:
        previewer = _load_strict(Previewer(**previewer_parts[1]), previewer_parts[0], "Previewer")
    return _host_vae(
        StageCCoderForHost(encoder, previewer),
        downscale_ratio=32,
        upscale_ratio=8,
        # Peak activations per input pixel, measured with the released encoder (768² image) and
        # Previewer (192² latent), fp32.
        encode_values_per_pixel=100,
        decode_values_per_pixel=27000,
        latent_channels=16,
        to_model_input=lambda image: image * 2.0 - 1.0,
        from_model_output=lambda image: ((image + 1.0) / 2.0).clamp(0.0, 1.0),
    )


def cascade_stage_of(model_patcher):
    """'c' or 'b' for a Stage C/B `MODEL` from any loader (ours or the host's), else None."""
    model = getattr(model_patcher, "model", None)
    if isinstance(model, comfy.model_base.StableCascade_C):
        return "c"
    if isinstance(model, comfy.model_base.StableCascade_B):
        return "b"
    return None
