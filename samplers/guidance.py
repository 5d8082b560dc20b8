"""Classifier-free guidance on the epsilon prediction, with GDF's rescale (cfg_rho).

    eps_cfg = lerp(eps_uncond, eps_cond, cfg) = eps_uncond + cfg * (eps_cond - eps_uncond)
    eps     = cfg_rho * eps_cfg * std(eps_cond) / (std(eps_cfg) + 1e-9) + (1 - cfg_rho) * eps_cfg

The rescale pulls the overall spread of the guided prediction back towards that of the conditional
one (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed"). As in the original,
std is torch's default unbiased std over the WHOLE batch tensor [B, C, H, W] at once, not per
sample, so samples in one batch influence each other's rescale factor.
"""
import torch


def cfg_lerp(eps_uncond, eps_cond, cfg):
    return torch.lerp(eps_uncond, eps_cond, cfg)


def rescale(eps_cfg, eps_cond, cfg_rho):
    if cfg_rho <= 0:
        return eps_cfg
    std_cond, std_cfg = eps_cond.std(), eps_cfg.std()
    return cfg_rho * (eps_cfg * std_cond / (std_cfg + 1e-9)) + eps_cfg * (1 - cfg_rho)


def guided_epsilon(eps_cond, eps_uncond, cfg, cfg_rho):
    return rescale(cfg_lerp(eps_uncond, eps_cond, cfg), eps_cond, cfg_rho)
