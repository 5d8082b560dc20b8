"""ControlNet residuals as one condition entry of the GDF sampler, each active over part of the noise range.

The residuals depend only on the control input, so they are computed once per sampling run; per step
`at(r)` sums those whose range holds the step's noise level. Ranges are given as the host gives them:
start/end as fractions of the sampling run (0 = pure noise, 1 = clean), at the sampler's shift.
"""
import math

import torch

from ..samplers.gdf import noise_levels


def noise_condition_range(start, end, shift):
    """(r_high, r_low): the network's noise levels r at the start and end of the active part of the run."""
    r_high = math.inf if start <= 0.0 else float(noise_levels(torch.tensor(1.0 - start), shift).r)
    r_low = -math.inf if end >= 1.0 else float(noise_levels(torch.tensor(1.0 - end), shift).r)
    return r_high, r_low


class ControlSchedule:
    """Entries of (residual list, r_high, r_low) for a batch of `batch_size` samples; residual lists
    hold [batch_size,C,h,w] tensors or None. An empty schedule still knows its batch size, so that the
    prompt without ControlNet gets zeros when batched with one that has some."""

    def __init__(self, entries, batch_size):
        self.entries = list(entries)
        self.batch_size = batch_size

    def at(self, r):
        """The summed residual list for noise level r, or None when no entry is active."""
        active = [residuals for residuals, r_high, r_low in self.entries if r_low <= r <= r_high]
        if not active:
            return None
        summed = [None] * max(len(residuals) for residuals in active)
        for residuals in active:
            for block, residual in enumerate(residuals):
                if residual is not None:
                    summed[block] = residual if summed[block] is None else summed[block] + residual
        return summed

    def cat(self, other):
        """The schedule for the batch cat([self's batch, other's batch]) (how GDF batches CFG).

        An entry both sides share (the same ControlNet on both prompts, as the original does) is
        concatenated with itself; an entry of one side only adds zeros to the other side's samples.
        """
        own_batch, other_batch = self.batch_size, other.batch_size
        shared = [entry for entry in self.entries if any(entry is theirs for theirs in other.entries)]
        entries = [(_cat_lists(entry[0], entry[0]), *entry[1:]) for entry in shared]
        entries += [(_cat_lists(e[0], None, other_batch), *e[1:]) for e in self.entries if not _contains(shared, e)]
        entries += [(_cat_lists(None, e[0], own_batch), *e[1:]) for e in other.entries if not _contains(shared, e)]
        return ControlSchedule(entries, own_batch + other_batch)

    def to(self, device=None, dtype=None):
        return ControlSchedule(
            (([None if r is None else r.to(device=device, dtype=dtype) for r in residuals], r_high, r_low)
             for residuals, r_high, r_low in self.entries), self.batch_size)


def _contains(entries, entry):
    return any(entry is known for known in entries)


def _cat_lists(first, second, missing_batch=0):
    """Blockwise cat of two residual lists; a missing side (None) counts as zeros of `missing_batch` samples."""
    template = first if first is not None else second
    out = []
    for block, residual in enumerate(template):
        if residual is None:
            out.append(None)
            continue
        zeros = residual.new_zeros((missing_batch, *residual.shape[1:]))
        a = first[block] if first is not None else zeros
        b = second[block] if second is not None else zeros
        out.append(torch.cat([a, b]))
    return out
