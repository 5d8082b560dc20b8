"""The GDF sampler nodes: Stage C (text -> 16-channel latent) and Stage B (-> Stage A latent)."""
import torch
from tqdm.auto import tqdm

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..samplers.gdf import diffuse, sample
from .choices import choice_problems
from .cascade_control import control_chain, control_models, control_schedules
from .conditioning import stage_b_inputs, stage_c_inputs
from . import memory_limits
from .host_models import cascade_stage_of
from .input_checks import (STAGE_B_LATENT, STAGE_C_LATENT, NonFiniteResult, check_finite_numbers, check_latent,
                           check_model, nonfinite_weights)
from .interrupts import interruptible
from .model_patches import network_caller
from .previews import make_preview_fn

CATEGORY = "stable_cascade/sampling"
SAMPLERS = ["ddpm", "ddim", "lcm"]
SAMPLER_TOOLTIP = (
    "ddpm: the original default (DDIM with eta 1, stochastic). ddim: deterministic with eta 0. "
    "lcm: for LCM-distilled models."
)


def _common_inputs(steps, cfg, shift):
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the noise. The same seed gives the same image on any device (noise is drawn on the CPU)."),
        io.Int.Input("steps", default=steps, min=1, max=1000, tooltip=f"Sampling steps. Original default: {steps}."),
        io.Float.Input("cfg", default=cfg, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip=f"Classifier-free guidance scale. Original default: {cfg}."),
        io.Float.Input("shift", default=shift, min=0.01, max=100.0, step=0.01,
                       tooltip=f"Noise schedule shift (SNR divided by shift squared). Original default: {shift}."),
        io.Float.Input("cfg_rho", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="Guidance rescale: how much of the guided prediction is rescaled to the conditional one's std (original: 0.7)."),
        io.Combo.Input("sampler", options=SAMPLERS, default="ddpm", tooltip=SAMPLER_TOOLTIP),
        io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Only for ddim: 0 is deterministic, 1 equals ddpm. Ignored by ddpm and lcm."),
        io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="1.0 starts from pure noise. Below 1, the input latent is noised to this level (t_start) and "
                               "sampled from there with 'steps' steps: image-to-image. The original uses 0.8 with 16 steps."),
    ]


STAGE_C_NODE = "Stage C Prior Sampler (Stable Cascade)"
STAGE_B_NODE = "Stage B Sampler (Stable Cascade)"
# Picture pixels per latent pixel, for the sizes a refusal suggests.
PICTURE_SCALE = {"c": 42.67, "b": 4}


def _check_numbers(node, cfg, shift, cfg_rho, eta, denoise):
    check_finite_numbers(node, cfg=cfg, shift=shift, cfg_rho=cfg_rho, eta=eta, denoise=denoise)


def _refuse_sizes_beyond_the_machine(node, model, stage, shape, compute_dtype, guided):
    needed = memory_limits.sampling_bytes(model.model.diffusion_model, stage, shape, mm.dtype_size(compute_dtype), guided)
    scale = PICTURE_SCALE[stage]
    picture = (round(shape[3] * scale), round(shape[2] * scale))
    budget = memory_limits.budget_bytes(model.load_device)
    memory_limits.refuse_if_too_large(node, f"Stage {stage.upper()} sampling", needed, budget, picture, shape[0])


def _nonfinite_cause(network, compute_dtype):
    """The likely reason a sampling produced NaN/inf, for the message."""
    corrupt = nonfinite_weights(network)
    if corrupt:
        return (f"the model's weights hold NaN or infinite values (e.g. {', '.join(corrupt)}): the model file is corrupt; "
                "download it again.")
    if compute_dtype in (torch.float16,):
        return "fp16 overflow: load the model with weight_dtype bf16 or fp32."
    return "a setting far outside the usual range (cfg, shift), or a model file with broken weights."


@torch.no_grad()
def run_gdf(model, latent, conditions, unconditional, *, seed, steps, cfg, shift, cfg_rho, sampler, eta, denoise,
            preview_vae=None, node_name="GDF sampler", control_chains=None):
    """Sample with the original GDF on a host MODEL; returns a host LATENT.

    control_chains: (positive's, negative's) cascade ControlNets, loaded with the model; their residuals
    are computed once and reach Stage C as the `cnet` condition.
    """
    call_network = network_caller(model, node_name, shift)
    if denoise <= 0.0:
        return dict(latent)
    host_model = model.model
    guided = cfg != 1.0
    compute_dtype = host_model.manual_cast_dtype or host_model.get_dtype()
    network = host_model.diffusion_model
    _refuse_sizes_beyond_the_machine(node_name, model, cascade_stage_of(model), tuple(latent["samples"].shape),
                                     compute_dtype, guided)
    # As the host's own samplers do: room for the model plus one step's activations on the
    # CFG-doubled batch, at least room for the plain batch.
    batch_shape = list(latent["samples"].shape)
    doubled_shape = [batch_shape[0] * 2] + batch_shape[1:]
    control_chains = control_chains or ()
    mm.load_models_gpu(
        [model, *control_models(control_chains)],
        memory_required=host_model.memory_required(doubled_shape),
        minimum_memory_required=host_model.memory_required(batch_shape),
    )
    device = model.load_device

    if any(control_chains):
        conditions["cnet"], unconditional["cnet"] = control_schedules(
            control_chains, host_model.diffusion_model, latent["samples"].shape, shift, compute_dtype)

    def run_network(x, r, **inputs):
        # Looked up per call: the host's torch.compile wrapper swaps the compiled network in here.
        return host_model.diffusion_model(x, r, **inputs)

    def epsilon(x, r, cnet=None, **inputs):
        # The conditions arrive already cast (below) and moved (by the sampler): no per-step copies.
        if cnet is not None:  # ControlNet residuals (computed in compute_dtype): those whose noise range holds r
            residuals = cnet.at(float(r[0]))
            if residuals is not None:
                inputs["cnet"] = residuals
        x, r = x.to(device=device, dtype=compute_dtype), r.to(device=device, dtype=torch.float32)
        return call_network(run_network, x, r, **inputs).float()

    conditions, unconditional = _cast_tensors(conditions, compute_dtype), _cast_tensors(unconditional, compute_dtype)

    preview = make_preview_fn(model, preview_vae, node_name)
    progress = comfy.utils.ProgressBar(steps)
    # The terminal bar the host's own KSampler prints (k-diffusion's trange), for people who watch the log.
    terminal = tqdm(total=steps, disable=not comfy.utils.PROGRESS_BAR_ENABLED)

    # Stop at the first broken step instead of sampling NaN to the end. Asking is a device sync, so on an
    # accelerator only steps that sync anyway (a preview) ask; NaN persists, so the final check catches the rest.
    check_each_step = torch.device(device).type == "cpu" or preview is not None

    def on_step(index, total, x0, x):
        mm.throw_exception_if_processing_interrupted()
        if check_each_step and not torch.isfinite(x).all():
            raise NonFiniteResult(f"{node_name}: step {index + 1} of {total} gave NaN or infinite values. "
                                  f"Likely cause: {_nonfinite_cause(network, compute_dtype)}")
        progress.update_absolute(index + 1, total, preview(x0) if preview is not None else None)
        terminal.update(index + 1 - terminal.n)

    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = {"shape": tuple(latent["samples"].shape)}
    if denoise < 1.0:
        clean = host_model.process_latent_in(latent["samples"].float())
        # The original noises the image with shift 1 but samples from t_start with the model's shift.
        noised, _ = diffuse(clean, denoise, generator, shift=1.0)
        start = {"x_init": noised}
    with terminal, interruptible(network):
        result = sample(
            epsilon,
            conditions=conditions,
            unconditional=unconditional,
            steps=steps,
            cfg=cfg,
            cfg_rho=cfg_rho,
            shift=shift,
            sampler=sampler,
            eta=eta if sampler == "ddim" else None,
            t_start=min(denoise, 1.0),
            generator=generator,
            device=device,
            callback=on_step,
            **start,
        )
    if not torch.isfinite(result).all():
        raise NonFiniteResult(f"{node_name}: the sampled latent holds NaN or infinite values. "
                              f"Likely cause: {_nonfinite_cause(network, compute_dtype)}")
    out = dict(latent)
    out["samples"] = host_model.process_latent_out(result).to(mm.intermediate_device())
    out.pop("noise_mask", None)
    return out


def _cast_tensors(value, dtype):
    """Every floating tensor in a condition dict (lists and nested dicts too) in `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _cast_tensors(item, dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_tensors(item, dtype) for item in value)
    return value


def _text_widths(model):
    """(text token width, pooled width) Stage C's mappers take (CLIP-G: 1280, 1280)."""
    network = model.model.diffusion_model
    pooled_mapper = getattr(network, "clip_txt_pooled_mapper", None)  # stand-in networks in tests may lack it
    return network.clip_txt_mapper.weight.shape[1], pooled_mapper.weight.shape[1] if pooled_mapper is not None else None


def _model_and_prompt_inputs(stage, positive_tooltip, negative_tooltip):
    return [
        io.Model.Input("model", tooltip=f"Stage {stage} model (from the Stage {stage} loader or the host's UNETLoader)."),
        io.Conditioning.Input("positive", tooltip=positive_tooltip),
        io.Conditioning.Input("negative", tooltip=negative_tooltip),
    ]


class GDFSampler(io.ComfyNode):
    """What both sampler nodes share; each defines its schema and how it conditions its stage."""

    @classmethod
    def validate_inputs(cls, sampler):
        return choice_problems(sampler=(sampler, SAMPLERS))


class StageCSampler(GDFSampler):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageCSampler",
            display_name="Stage C Prior Sampler (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Samples the Stage C latent with the original GDF sampler (cosine schedule with shift, DDPM, rescaled CFG, "
                "final x0), number for number as the original release. Connect a Stage C VAE to see real previews while it runs."
            ),
            inputs=[
                *_model_and_prompt_inputs("C", "Prompt, from CLIPTextEncode with a 'stable_cascade' CLIP.",
                                          "Negative prompt (the original uses an empty caption)."),
                io.Latent.Input("stage_c", tooltip="Stage C latent: from the empty-latent node, or an encoded image for image-to-image."),
                *_common_inputs(steps=20, cfg=4.0, shift=2.0),
                io.Vae.Input("preview_vae", optional=True,
                             tooltip="Optional Stage C VAE with the Previewer: each step's preview is decoded by it. "
                                     "Unconnected, an installed previewer*.safetensors is used when previews are on."),
            ],
            outputs=[io.Latent.Output(display_name="stage_c", tooltip="The sampled Stage C latent (16 channels).")],
        )

    @classmethod
    def execute(cls, model, positive, negative, stage_c, seed, steps, cfg, shift, cfg_rho, sampler, eta, denoise, preview_vae=None):
        _check_numbers(STAGE_C_NODE, cfg, shift, cfg_rho, eta, denoise)
        check_model(STAGE_C_NODE, "model", model, "c")
        batch = check_latent(STAGE_C_NODE, "stage_c", stage_c, STAGE_C_LATENT).shape[0]
        text_width, pooled_width = _text_widths(model)
        conditions = stage_c_inputs(positive, batch, text_width, "positive", pooled_width)
        unconditional = stage_c_inputs(negative, batch, text_width, "negative", pooled_width)
        # The original's unconditional image embedding: zeros, shaped like the conditional one.
        unconditional["clip_img"] = torch.zeros_like(conditions["clip_img"])
        chains = (control_chain(positive[0][1], "positive"), control_chain(negative[0][1], "negative"))
        result = run_gdf(model, stage_c, conditions, unconditional, seed=seed, steps=steps, cfg=cfg, shift=shift,
                         cfg_rho=cfg_rho, sampler=sampler, eta=eta, denoise=denoise, preview_vae=preview_vae,
                         node_name=STAGE_C_NODE, control_chains=chains)
        return io.NodeOutput(result)


class StageBSampler(GDFSampler):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageBSampler",
            display_name="Stage B Sampler (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Expands a Stage C latent into a Stage A latent with the original GDF sampler, conditioned on the Stage C latent "
                "(zeros for the negative) and the pooled text embedding."
            ),
            inputs=[
                *_model_and_prompt_inputs("B", "Prompt (Stage B uses only its pooled embedding).",
                                          "Negative prompt (pooled embedding only)."),
                io.Latent.Input("stage_c", tooltip="The sampled Stage C latent that Stage B expands."),
                io.Latent.Input("stage_b", tooltip="Stage B latent: sets the output size (image size / 4)."),
                *_common_inputs(steps=10, cfg=1.1, shift=1.0),
            ],
            outputs=[io.Latent.Output(display_name="stage_b", tooltip="The sampled Stage B latent, for Stage A decoding.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, stage_c, stage_b, seed, steps, cfg, shift, cfg_rho, sampler, eta, denoise):
        _check_numbers(STAGE_B_NODE, cfg, shift, cfg_rho, eta, denoise)
        check_model(STAGE_B_NODE, "model", model, "b")
        prior = check_latent(STAGE_B_NODE, "stage_c", stage_c, STAGE_C_LATENT)
        batch = check_latent(STAGE_B_NODE, "stage_b", stage_b, STAGE_B_LATENT).shape[0]
        pooled_width = model.model.diffusion_model.clip_mapper.weight.shape[1]
        conditions = stage_b_inputs(positive, prior, batch, "positive", pooled_width)
        unconditional = stage_b_inputs(negative, torch.zeros_like(prior), batch, "negative", pooled_width)
        result = run_gdf(model, stage_b, conditions, unconditional, seed=seed, steps=steps, cfg=cfg, shift=shift,
                         cfg_rho=cfg_rho, sampler=sampler, eta=eta, denoise=denoise, node_name=STAGE_B_NODE)
        return io.NodeOutput(result)


NODES = [StageCSampler, StageBSampler]
