"""What a node checks about the values its inputs receive, and the one way it says what is wrong.

The host checks only the *type* of a link (LATENT, VAE, MODEL, ...); a Stage C latent and a Stage B
latent are both LATENT, a Stage A and a Stage C VAE both VAE. Without these checks a wrong wire ends
in a raw PyTorch error ("Given groups=1, weight of size ...") or, worse, in a black picture. Every
message says which node and input, what the input got, what it needs and which node makes that:

    check_finite_numbers("Stage C Sampler", cfg=cfg, shift=shift)
    samples = check_latent("Stage B Sampler", "stage_b", stage_b, STAGE_B_LATENT)
    check_vae("Stage A Decode", "stage_a", stage_a, "stage_a")
    check_model("Stage C Sampler", "model", model, "c")
    check_finite_result("Stage A Decode", image, "the decoded image", causes=...)

Nodes added later (images in, LoRA, ControlNet) call these the same way; new kinds of values get a
new entry in MAKERS and, where needed, a new `check_*` here rather than a message of their own.
"""
import math
from dataclasses import dataclass

import torch

import comfy.ldm.cascade.stage_a
import comfy.ldm.cascade.stage_c_coder

from .host_models import StageAForHost, StageCCoderForHost, cascade_stage_of


class WrongInput(ValueError):
    """A node input received something the node cannot use; the message says what to connect."""


class NonFiniteResult(ValueError):
    """A node computed NaN or infinite values; the message names the likely cause."""


# Which node makes each kind of value (the end of every message).
MAKERS = {
    "stage_c_latent": "the 'stage_c' output of 'Empty Latents (Stable Cascade)', 'Stage C Encode (Stable Cascade)' or a 'Stage C Prior Sampler (Stable Cascade)'",
    "stage_b_latent": "the 'stage_b' output of 'Empty Latents (Stable Cascade)', 'Stage A Encode (Stable Cascade)' or a 'Stage B Sampler (Stable Cascade)'",
    "stage_a": "'Load Stage A VAE (Stable Cascade)' (or the host's 'Load VAE' with stage_a.safetensors)",
    "stage_c_previewer": "'Load Stage C VAE (Stable Cascade)' with a previewer file",
    "stage_c_encoder": "'Load Stage C VAE (Stable Cascade)' with an encoder file",
    "model_c": "'Load Stage C Prior (Stable Cascade)' (or the host's 'Load Diffusion Model' with a Stage C file)",
    "model_b": "'Load Stage B Decoder (Stable Cascade)' (or the host's 'Load Diffusion Model' with a Stage B file)",
    "conditioning": "'CLIP Text Encode' with a CLIP from 'Load CLIP' of type 'stable_cascade' (CLIP-G)",
}


def wrong_input(node, input_name, got, needs, maker_key=None):
    """The pack's message for a wrong input: node, input, what it got, what it needs, who makes it."""
    message = f"{node}: '{input_name}' got {got}, but it needs {needs}."
    if maker_key is not None:
        message += f" Connect {MAKERS[maker_key]}."
    return WrongInput(message)


# -- numbers ------------------------------------------------------------------------------------

def check_finite_numbers(node, **numbers):
    """Every float input must be a finite number: the host's range check lets NaN through, and a NaN
    cfg or shift samples a 'successful' black picture."""
    bad = [f"'{name}' is {value}" for name, value in numbers.items() if not math.isfinite(float(value))]
    if bad:
        raise WrongInput(
            f"{node}: {', '.join(bad)}; every number input needs a finite value "
            "(NaN and infinity only arrive through an API prompt or a broken upstream node)."
        )


# -- latents ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatentKind:
    key: str  # MAKERS key
    name: str  # "a Stage C latent"
    channels: int
    multiple_of: int = 1  # height and width must be multiples of this


STAGE_C_LATENT = LatentKind("stage_c_latent", "a Stage C latent (16 channels)", 16)
# Stage B unshuffles its latent by 2 (image sides multiples of 8).
STAGE_B_LATENT = LatentKind("stage_b_latent", "a Stage B latent (4 channels, even height and width)", 4, 2)

# What a latent probably is, from its channel count, for the "got ..." part of a message.
_LATENTS_BY_CHANNELS = {16: "a Stage C latent", 4: "a Stage B latent (or an SD1/SDXL latent)"}


def describe_latent(samples):
    shape = list(samples.shape)
    if samples.dim() != 4:
        return f"a {samples.dim()}-D latent {shape} (a video or audio latent?)"
    what = _LATENTS_BY_CHANNELS.get(shape[1], f"a {shape[1]}-channel latent")
    return f"{what} {shape}"


def check_latent(node, input_name, latent, kind):
    """The `samples` tensor of a LATENT input after checking it is `kind` (a LatentKind)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise wrong_input(node, input_name, f"a LATENT without a 'samples' tensor ({type(latent).__name__})",
                          kind.name, kind.key)
    if samples.dim() != 4 or samples.shape[1] != kind.channels:
        raise wrong_input(node, input_name, describe_latent(samples), kind.name, kind.key)
    height, width = samples.shape[2:]
    if height % kind.multiple_of or width % kind.multiple_of:
        raise wrong_input(node, input_name, f"a latent of {height}x{width}",
                          f"{kind.name} whose sides are multiples of {kind.multiple_of} (picture sides multiples of 8)",
                          kind.key)
    if samples.numel() == 0:
        raise wrong_input(node, input_name, f"an empty latent {list(samples.shape)}", kind.name, kind.key)
    if not torch.isfinite(samples).all():
        raise NonFiniteResult(
            f"{node}: '{input_name}' holds NaN or infinite values: the node that made it failed "
            "(a NaN setting, a corrupt model file, or fp16 overflow there)."
        )
    return samples


# -- VAEs ---------------------------------------------------------------------------------------

def vae_kind(vae):
    """'stage_a', 'stage_c_coder' or None, for a host VAE from our loaders or the host's own."""
    model = getattr(vae, "first_stage_model", None)
    if isinstance(model, (StageAForHost, comfy.ldm.cascade.stage_a.StageA)):
        return "stage_a"
    if isinstance(model, (StageCCoderForHost, comfy.ldm.cascade.stage_c_coder.StageC_coder)):
        return "stage_c_coder"
    return None


def _has_part(vae, part):
    """Whether a Stage C VAE holds its encoder / previewer (our loader may leave either out)."""
    return getattr(vae.first_stage_model, part, None) is not None


_VAE_TEXT = {
    "stage_a": "a Stage A VAE",
    "stage_c_coder": "a Stage C VAE (EfficientNet encoder / Previewer)",
    None: "a VAE of another model family",
}
_WANTED_VAE = {
    "stage_a": ("Stage A (the 4-channel VQGAN)", "stage_a"),
    "stage_c_previewer": ("a Stage C VAE with its Previewer", "stage_c_previewer"),
    "stage_c_encoder": ("a Stage C VAE with its EfficientNet encoder", "stage_c_encoder"),
}


def vae_problem(node, input_name, vae, want):
    """None when `vae` can do `want` ('stage_a', 'stage_c_previewer', 'stage_c_encoder'), else a WrongInput."""
    kind = vae_kind(vae)
    needs, maker = _WANTED_VAE[want]
    if want == "stage_a" and kind == "stage_a":
        return None
    if want.startswith("stage_c_") and kind == "stage_c_coder":
        part = "previewer" if want == "stage_c_previewer" else "encoder"
        if _has_part(vae, part):
            return None
        return wrong_input(node, input_name, f"a Stage C VAE loaded without its {part}", needs, maker)
    return wrong_input(node, input_name, _VAE_TEXT[kind], needs, maker)


def check_vae(node, input_name, vae, want):
    problem = vae_problem(node, input_name, vae, want)
    if problem is not None:
        raise problem
    return vae


# -- models -------------------------------------------------------------------------------------

def check_model(node, input_name, model, stage):
    found = cascade_stage_of(model)
    if found != stage:
        got = f"a Stage {found.upper()} model" if found else f"a model that is not Stable Cascade ({_model_name(model)})"
        raise wrong_input(node, input_name, got, f"a Stage {stage.upper()} model", f"model_{stage}")
    return model


def _model_name(model_patcher):
    model = getattr(model_patcher, "model", None)
    return type(model).__name__ if model is not None else type(model_patcher).__name__


# -- results ------------------------------------------------------------------------------------

def check_finite_result(node, tensor, what, causes):
    """Refuse NaN/inf in what a node computed (a sampled latent, a decoded image) instead of passing
    on a black picture; `causes` is the likely reason, in words."""
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).float().mean().item()
        raise NonFiniteResult(f"{node}: {what} holds NaN or infinite values ({bad:.0%} of them). Likely cause: {causes}")
    return tensor


def nonfinite_weights(module):
    """Names of the first parameters of `module` that hold NaN or inf (a corrupt file), at most 3."""
    bad = []
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not tensor.is_meta and not torch.isfinite(tensor).all():
            bad.append(name)
            if len(bad) == 3:
                break
    return bad
