"""The GDF sampling loop (Stable Cascade's sampler), and `diffuse` for image-to-image starts.

Per step i, going from time t_i to t_{i+1} on linspace(t_start, 0, steps + 1):

    logSNR_i   = schedule(t_i, shift)                      (cosine, clamped to the shift-1 limits)
    a_i, b_i   = sqrt(sigmoid(logSNR_i)), sqrt(1 - sigmoid(logSNR_i))
    r_i        = noise_condition(logSNR_i)                 (unshifted cosine time of that level)
    eps        = model(x, r_i, **conditions)               (guided: CFG lerp + rescale)
    x0         = (x - eps * b_i) / a_i
    x          = step_rule(x0, eps, a_i, b_i, a_{i+1}, b_{i+1}, noise)

All randomness comes from one CPU generator, drawn in a fixed order (the start latent, then one
draw per step), so a seed gives the same image on any device. The step draws are all taken before
the first step and moved to the device in one copy: the loop itself then does no host work (a
per-step copy from CPU memory would wait for the device every step).
"""
import functools
from collections import namedtuple

import torch

from . import forward_process, guidance
from .noise_condition import noise_condition
from .scaler import vp_scalers
from .schedule import logSNR as schedule_logSNR
from .steps import STEP_RULES, ddim_step

NoiseLevels = namedtuple("NoiseLevels", "t logSNR a b r")
Step = namedtuple("Step", "index t logSNR a b r x0 eps noise x")


def noise_levels(t, shift=1.0):
    """logSNR, a, b and the network's r for times t (float32, CPU or t's device)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    logSNR = schedule_logSNR(t, shift)
    a, b = vp_scalers(logSNR)
    return NoiseLevels(t, logSNR, a, b, noise_condition(logSNR))


def draw_noise(shape, generator, device):
    """A standard-normal draw from the CPU generator, then moved: device-independent noise."""
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def draw_step_noise(steps, shape, generator, device):
    """The loop's `steps` draws, in order, as one [steps, *shape] tensor on `device` (one copy).

    Each draw is its own randn call of `shape`, exactly as if drawn step by step: one call of the
    stacked shape would consume the generator differently.
    """
    draws = [torch.randn(tuple(shape), generator=generator, dtype=torch.float32) for _ in range(steps)]
    return torch.stack(draws).to(device)


def diffuse(x_clean, t, generator=None, shift=1.0):
    """Noise a clean latent to time t for image-to-image: returns (x_t, eps), eps the next draw of `generator`.

    The official image-to-image notebooks diffuse with shift 1 even though Stage C then samples with
    shift 2 from the same t (the image ends up less noisy than the sampler assumes); keep shift=1.0
    to reproduce them. Training uses `forward_process.diffuse`, which returns everything GDF's does.
    """
    diffused = forward_process.diffuse(x_clean, t=t, generator=generator, shift=shift)
    return diffused.noised, diffused.noise


def sample(model, steps, callback=None, **arguments):
    """Sample a latent with GDF; returns the FINAL x0 ESTIMATE (float32, on the sampling device).

    `steps` and `arguments` are those of `sample_steps`. callback(step_index, steps, x0, x) runs
    after every step; an exception it raises stops sampling.
    """
    x0 = None
    for step in sample_steps(model, steps=steps, **arguments):
        x0 = step.x0
        if callback is not None:
            callback(step.index, steps, step.x0, step.x)
    # The official pipelines keep the last x0 estimate, not the last x: x still carries the last
    # step's fresh noise (b = 0.02 at t = 0 for shift 2).
    return x0


def sample_steps(model, shape=None, x_init=None, conditions=None, unconditional=None, steps=20,
                 cfg=4.0, cfg_rho=0.7, shift=2.0, sampler="ddpm", eta=None, t_start=1.0,
                 generator=None, device=None):
    """Checks the arguments now and returns an iterator of `Step`s, one per sampling step.

    model(x, r, **conditions) -> epsilon, with x [N, C, H, W] and r [N] in float32 on `device`
    (casting to the network's own dtype is the caller's: the node's wrapper does it). Guidance runs
    when `unconditional` is given and cfg is neither None nor 1.0: one model call per step on the
    doubled batch x = cat([x, x]), r repeated, each condition cat([cond, uncond]). cfg == 1.0 skips
    the doubled batch (half the compute); the original would still double it, and its result differs
    from the plain batch only by the rescale's rounding (a few float32 ulps).

    The start latent is the first draw of `generator` (shape `shape`), or `x_init` used as-is (not
    re-noised; see `diffuse`). Then one noise tensor per step is drawn, for every sampler, all of
    them now (see `draw_step_noise`).
    """
    step_rule = _step_rule(sampler, eta)
    _check_arguments(shape, x_init, steps, t_start, shift, cfg_rho)
    if device is None:
        device = x_init.device if x_init is not None else torch.device("cpu")
    if x_init is None:
        x = draw_noise(shape, generator, device)
    else:
        x = x_init.to(device=device, dtype=torch.float32).clone()
    if cfg == 1.0 or unconditional is None:
        cfg = None
    predict_eps = _epsilon_predictor(model, conditions or {}, unconditional, cfg, cfg_rho, device)
    levels = noise_levels(torch.linspace(t_start, 0.0, steps + 1), shift)
    levels = NoiseLevels(*(values.to(device) for values in levels))
    step_noise = draw_step_noise(steps, x.shape, generator, device)
    return _sampling_loop(predict_eps, step_rule, x, levels, step_noise)


def _sampling_loop(predict_eps, step_rule, x, levels, step_noise):
    for i, noise in enumerate(step_noise):
        a, b, r = levels.a[i], levels.b[i], levels.r[i]
        a_prev, b_prev = levels.a[i + 1], levels.b[i + 1]
        eps = predict_eps(x, r)
        x0 = (x - eps * b) / a
        x = step_rule(x0, eps, a, b, a_prev, b_prev, noise)
        yield Step(i, levels.t[i], levels.logSNR[i], a, b, r, x0, eps, noise, x)


def _epsilon_predictor(model, conditions, unconditional, cfg, cfg_rho, device):
    """eps(x, r): one model call per step, guided on the doubled batch when cfg is set."""
    if cfg is None:
        model_conditions = _to(conditions, device)
    else:
        _check_same_keys(conditions, unconditional)
        model_conditions = {key: _to(_cat(conditions[key], unconditional[key]), device)
                            for key in conditions}

    def predict_eps(x, r):
        batch = x.shape[0]
        if cfg is None:
            return model(x, r.repeat(batch), **model_conditions).to(device, torch.float32)
        eps_both = model(torch.cat([x, x]), r.repeat(2 * batch), **model_conditions)
        eps_cond, eps_uncond = eps_both.to(device, torch.float32).chunk(2)
        return guidance.guided_epsilon(eps_cond, eps_uncond, cfg, cfg_rho)

    return predict_eps


def _cat(cond, uncond):
    """Batch a condition with its unconditional twin: tensors and lists of tensors (ControlNet)."""
    if isinstance(cond, torch.Tensor):
        return torch.cat([cond, uncond.to(cond.device)])
    if isinstance(cond, (list, tuple)):
        return [None if c is None else _cat(c, u) for c, u in zip(cond, uncond)]
    if hasattr(cond, "cat"):  # a batched condition object (controlnet.schedule.ControlSchedule)
        return cond.cat(uncond)
    return cond  # non-tensor settings are shared by both halves


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to(v, device) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to(v, device) for v in value]
    if hasattr(value, "to"):  # a batched condition object (controlnet.schedule.ControlSchedule)
        return value.to(device)
    return value


def _step_rule(sampler, eta):
    if sampler not in STEP_RULES:
        raise ValueError(f"unknown sampler {sampler!r}: expected one of {sorted(STEP_RULES)}")
    if sampler != "ddim":
        if eta is not None:
            raise ValueError(f"eta={eta!r} was given for sampler {sampler!r}, but eta applies to "
                             "'ddim' only ('ddpm' is ddim with eta=1); pass eta=None")
        return STEP_RULES[sampler]
    eta = 0.0 if eta is None else float(eta)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM), got {eta}")
    return functools.partial(ddim_step, eta=eta)


def _check_arguments(shape, x_init, steps, t_start, shift, cfg_rho):
    if (shape is None) == (x_init is None):
        raise ValueError("give exactly one of `shape` (start from noise) and `x_init` (start from "
                         f"a latent); got shape={shape!r} and x_init={'None' if x_init is None else 'a tensor'}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1] (1 = pure noise), got {t_start!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")
    if not cfg_rho >= 0:
        raise ValueError(f"cfg_rho must be >= 0 (0 = plain CFG), got {cfg_rho!r}")


def _check_same_keys(conditions, unconditional):
    if set(conditions) != set(unconditional):
        raise ValueError("conditions and unconditional must have the same keys for CFG; got "
                         f"{sorted(conditions)} and {sorted(unconditional)}")
