"""The noise condition r: the scalar the Stage B / Stage C networks receive for a noise level.

The networks were trained on the cosine TIME, not on logSNR: r is the inverse of the UNSHIFTED
cosine schedule applied to the (possibly shifted) logSNR. So with shift 2 the network sees the
"unshifted time" of the shifted level (t=0.5, shift 2 -> r=0.70564), and a shift changes r, not
only the step sizes.
"""
from .schedule import t_from_logSNR


def noise_condition(logSNR):
    """r in [0, 1] for a logSNR (GDF's CosineTNoiseCond, s=0.008, clamped to [0, 1])."""
    return t_from_logSNR(logSNR).clamp(0, 1)
