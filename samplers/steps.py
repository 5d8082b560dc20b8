"""One update rule per sampler, all with the same signature (k-diffusion's sampling.py shape).

Each rule moves from noise level (a, b) to the next, less noisy level (a_prev, b_prev), given the
model's x0 and epsilon estimates and a fresh standard-normal `noise` tensor. The loop always draws
`noise` (even where a rule ignores it or scales it by zero) so that every sampler consumes the
generator exactly as the original does: one draw per step.
"""
import torch


def ddim_step(x0, eps, a, b, a_prev, b_prev, noise, eta=0.0):
    """DDIM (Song et al.): keep part of eps, replace the rest with sigma * fresh noise.

    sigma = eta * sqrt(b_prev^2 / b^2) * sqrt(1 - a^2 / a_prev^2)
    x     = a_prev * x0 + sqrt(b_prev^2 - sigma^2) * eps + sigma * noise
    With eta = 0 sigma is 0: deterministic, the noise is drawn but multiplied away.
    """
    sigma = eta * torch.sqrt(b_prev**2 / b**2) * torch.sqrt(1 - a**2 / a_prev**2)
    return a_prev * x0 + torch.sqrt(b_prev**2 - sigma**2) * eps + sigma * noise


def ddpm_step(x0, eps, a, b, a_prev, b_prev, noise):
    """DDPM ancestral sampling: DDIM with eta = 1 (the default of every official config)."""
    return ddim_step(x0, eps, a, b, a_prev, b_prev, noise, eta=1.0)


def lcm_step(x0, eps, a, b, a_prev, b_prev, noise):
    """LCM (consistency) step: re-noise the x0 estimate to the next level with fresh noise.

    x = a_prev * x0 + b_prev * noise
    """
    return a_prev * x0 + b_prev * noise


STEP_RULES = {"ddpm": ddpm_step, "ddim": ddim_step, "lcm": lcm_step}
