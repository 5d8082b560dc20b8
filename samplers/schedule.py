"""The cosine noise schedule, in logSNR, exactly as GDF's `CosineSchedule` computes it.

t in [0, 1] runs from clean (t=0) to pure noise (t=1). The schedule is the improved-DDPM cosine
(Nichol & Dhariwal, s=0.008) written as a log signal-to-noise ratio:

    var(t)    = cos((s + t)/(1 + s) * pi/2)^2 / cos(s/(1 + s) * pi/2)^2,  clamped to [1e-4, 0.9999]
    logSNR(t) = log(var / (1 - var)) + 2*log(1/shift),                    clamped to LOGSNR_LIMITS

The float32 operation order follows the original so that results match it bit for bit.
"""
import math

import torch

S = 0.008
VAR_RANGE = (1e-4, 0.9999)

_s = torch.tensor([S], dtype=torch.float32)
_min_var = torch.cos(_s / (1 + _s) * math.pi * 0.5) ** 2


def logSNR_unclamped(t, shift=1.0):
    """Cosine logSNR at time t, with the shift applied (SNR divided by shift^2), before the limit clamp."""
    t = torch.as_tensor(t, dtype=torch.float32)
    s, min_var = _s.to(t.device), _min_var.to(t.device)
    var = torch.cos((s + t.clamp(0, 1)) / (1 + s) * math.pi * 0.5).clamp(0, 1) ** 2 / min_var
    var = var.clamp(*VAR_RANGE)
    logSNR = (var / (1 - var)).log()
    if shift != 1:
        logSNR = logSNR + 2 * math.log(1 / shift)
    return logSNR.reshape(t.shape)


# The limits are those of the UNSHIFTED schedule, computed once (the original does this at
# construction). A shifted schedule is clamped back into them, so with shift 2 the first step starts
# at logSNR -9.21024 (the shift-1 minimum), not at the unclamped -10.60.
LOGSNR_LIMITS = tuple(logSNR_unclamped(torch.tensor([1.0, 0.0])).tolist())


def logSNR(t, shift=1.0):
    """Cosine logSNR at time t with the given shift, clamped to the shift-1 limits."""
    return logSNR_unclamped(t, shift).clamp(*LOGSNR_LIMITS)


def t_from_logSNR(logSNR):
    """Inverse of the unshifted cosine schedule: the time t whose (shift-1) logSNR is `logSNR`."""
    logSNR = torch.as_tensor(logSNR, dtype=torch.float32)
    s, min_var = _s.to(logSNR.device), _min_var.to(logSNR.device)
    var = logSNR.sigmoid().clamp(0, 1)
    t = (((var * min_var) ** 0.5).acos() / (math.pi * 0.5)) * (1 + s) - s
    return t.reshape(logSNR.shape)
