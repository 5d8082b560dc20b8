"""Training a Stage C LoRA (and new text tokens) on one GPU: the frozen network, the step, the loop.

The step is the original `train_c_lora.py` forward_pass: GDF noises the EfficientNet latents, the
network (frozen, with LoRA hooks) predicts the noise, and the loss is the per-sample MSE weighted by
the loss weight. What keeps it on one consumer GPU: the base network holds no gradients
(`frozen`), blocks recompute their activations in the backward pass (`checkpointed_blocks`), and the
forward runs under bf16 autocast, or fp16 autocast with a gradient scaler where bf16 is missing.
Pure PyTorch: the host glue hands in the network, the latents and a text encoder.
"""
import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..samplers.forward_process import diffuse
from ..samplers.loss_weights import AdaptiveLossWeight, p2_loss_weight

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOSS_WEIGHTINGS = ("p2", "adaptive")


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); the message says why and what to do."""


@contextlib.contextmanager
def frozen(*modules):
    """No parameter of `modules` takes a gradient inside the block; flags are restored afterwards."""
    parameters = [p for module in modules if module is not None for p in module.parameters()]
    flags = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)


def trunk_blocks(network):
    """The blocks of the down and up paths: the units that gradient checkpointing recomputes."""
    return [block for level in [*network.down_blocks, *network.up_blocks] for block in level]


@contextlib.contextmanager
def checkpointed_blocks(network, enabled=True):
    """Each trunk block keeps only its inputs for the backward pass and recomputes the rest."""
    blocks = trunk_blocks(network) if enabled else []
    try:
        for block in blocks:
            block.forward = _checkpointed(block.forward)
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute; the class's forward shows again


def _checkpointed(forward):
    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return run


@dataclass
class Precision:
    name: str
    autocast_dtype: torch.dtype = None  # None: no autocast (fp32)
    scaled: bool = False  # fp16: a gradient scaler keeps small gradients from vanishing

    def autocast(self, device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)


def choose_precision(requested, device):
    """'auto': bf16 on a GPU that has it, fp16 (with a scaler) on one that does not, fp32 on the CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    device = torch.device(device)
    if requested == "auto":
        if device.type != "cuda":
            requested = "fp32"
        else:
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {
        "bf16": Precision("bf16", torch.bfloat16),
        "fp16": Precision("fp16", torch.float16, scaled=True),
        "fp32": Precision("fp32"),
    }[requested]


def forward_pass(network, latents, conditions, generator, loss_weight, precision):
    """One batch: (per-sample raw loss, the weighted loss to minimise, logSNR), as the original's."""
    with torch.no_grad():
        noised, noise, target, logSNR, r, weight = diffuse(latents, generator=generator, loss_weight=loss_weight)
    with precision.autocast(latents.device):
        pred = network(noised, r, **conditions)
    loss = F.mse_loss(pred.float(), target, reduction="none").mean(dim=[1, 2, 3])
    return loss, (loss * weight).mean(), logSNR


class NewTokens(nn.Module):
    """Learned embeddings of new prompt tokens: each starts from its init vector (the mean of the
    vocabulary rows its init pattern matched, or zeros) and learns a delta, as the original's ReToken."""

    def __init__(self, initial_vectors):
        super().__init__()
        self.names = list(initial_vectors)
        self.register_buffer("initial", torch.stack([initial_vectors[n].float().reshape(-1) for n in self.names])
                             if self.names else torch.zeros(0, 0))
        self.delta = nn.Parameter(torch.zeros_like(self.initial))

    def vectors(self):
        """{name: [1, width] embedding}; differentiable in the delta."""
        current = self.initial + self.delta
        return {name: current[i:i + 1] for i, name in enumerate(self.names)}


@dataclass
class Settings:
    steps: int = 100
    learning_rate: float = 1e-4
    batch_size: int = 1  # images per optimiser update, split over the accumulation steps
    gradient_accumulation: int = 1
    seed: int = 0
    caption_dropout: float = 0.05
    precision: str = "auto"
    gradient_checkpointing: bool = True
    loss_weighting: str = "p2"
    max_grad_norm: float = 1.0
    # Consecutive updates with a non-finite loss or gradient before giving up. fp16's scaler skips a
    # few while it finds its scale (it halves each time), so it gets more room.
    nonfinite_patience: int = 5
    nonfinite_patience_scaled: int = 25

    @property
    def micro_batch(self):
        return self.batch_size // self.gradient_accumulation


def settings_problems(settings, dataset_size):
    """Messages for settings that cannot train, before anything loads."""
    problems = []
    if settings.steps < 1:
        problems.append(f"steps must be >= 1, got {settings.steps}")
    if settings.gradient_accumulation < 1:
        problems.append(f"gradient_accumulation must be >= 1, got {settings.gradient_accumulation}")
    elif settings.batch_size < 1 or settings.batch_size % settings.gradient_accumulation:
        problems.append(
            f"batch_size {settings.batch_size} cannot be split into {settings.gradient_accumulation} equal micro-batches "
            f"(that leaves {max(settings.micro_batch, 0)} images per forward pass): make batch_size a multiple of "
            f"gradient_accumulation, at least {settings.gradient_accumulation}")
    elif dataset_size is not None and settings.micro_batch > dataset_size:
        problems.append(f"each forward pass takes {settings.micro_batch} images (batch_size / gradient_accumulation) "
                        f"but the dataset has only {dataset_size}")
    if not settings.learning_rate > 0:
        problems.append(f"learning_rate must be > 0, got {settings.learning_rate}")
    if not 0.0 <= settings.caption_dropout <= 1.0:
        problems.append(f"caption_dropout must be in [0, 1], got {settings.caption_dropout}")
    if settings.precision not in PRECISIONS:
        problems.append(f"precision must be one of {PRECISIONS}, got {settings.precision!r}")
    if settings.loss_weighting not in LOSS_WEIGHTINGS:
        problems.append(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {settings.loss_weighting!r}")
    return problems


def step_generator(seed, step):
    """The CPU generator of one update: the same draws whether a run was resumed or not."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def draw_batch(generator, dataset_size, micro_batch, captions, caption_dropout):
    """Indices of one micro-batch and their captions, some dropped to "" (the unconditional caption)."""
    indices = torch.randperm(dataset_size, generator=generator)[:micro_batch]
    dropped = torch.rand(micro_batch, generator=generator) < caption_dropout
    return indices, ["" if drop else captions[i] for i, drop in zip(indices.tolist(), dropped.tolist())]


def train(network, lora, latents, captions, encode_text, settings, tokens=None, start_step=0, on_update=None,
          device=None):
    """Trains `lora` (and `tokens`) on `network`; returns {step: loss} of the updates it ran.

    latents: [N, 16, h, w] clean Stage C latents (any device); captions: N strings.
    encode_text(captions, token_vectors) -> {"clip_text", "clip_text_pooled"} for the network
    (differentiable in token_vectors when tokens are trained). clip_img is always zeros: the original
    gives 10 % of samples their CLIP-L image embedding, which needs an image encoder this trainer does
    not load.
    on_update(step, loss) runs after every update; an exception it raises (the host's interrupt)
    stops training there, after the last completed update.
    """
    problems = settings_problems(settings, len(captions))
    if problems:
        raise ValueError("; ".join(problems))
    device = torch.device(device) if device is not None else next(network.parameters()).device
    precision = choose_precision(settings.precision, device)
    lora.to(device)
    if tokens is not None:
        tokens.to(device)
    trainable = [*lora.parameters(), *(tokens.parameters() if tokens is not None else [])]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)
    loss_weight = AdaptiveLossWeight() if settings.loss_weighting == "adaptive" else p2_loss_weight
    patience = settings.nonfinite_patience_scaled if precision.scaled else settings.nonfinite_patience
    losses, bad_updates = {}, 0

    with frozen(network), lora.attached(network), checkpointed_blocks(network, settings.gradient_checkpointing):
        for step in range(start_step + 1, settings.steps + 1):
            generator = step_generator(settings.seed, step)
            step_loss, finite = 0.0, True
            for _ in range(settings.gradient_accumulation):
                indices, batch_captions = draw_batch(generator, len(captions), settings.micro_batch, captions,
                                                     settings.caption_dropout)
                token_vectors = tokens.vectors() if tokens is not None else {}
                conditions = dict(encode_text(batch_captions, token_vectors))
                conditions = {k: v.to(device) for k, v in conditions.items()}
                conditions.setdefault("clip_img", torch.zeros(len(indices), 1, _clip_img_width(network), device=device))
                raw, weighted, logSNR = forward_pass(network, latents[indices].to(device), conditions, generator,
                                                     loss_weight, precision)
                if not torch.isfinite(weighted):
                    finite = False
                    break
                if isinstance(loss_weight, AdaptiveLossWeight):
                    loss_weight.update(logSNR, raw)
                scaler.scale(weighted / settings.gradient_accumulation).backward()
                step_loss += weighted.item() / settings.gradient_accumulation
            if finite:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                finite = bool(torch.isfinite(grad_norm))
                if precision.scaled:
                    scaler.step(optimizer)  # the scaler skips the step (and lowers its scale) on inf/NaN
                    scaler.update()
                elif finite:
                    optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not finite:
                bad_updates += 1
                if bad_updates >= patience:
                    raise TrainingStopped(_nonfinite_message(bad_updates, step, precision, start_step, losses))
                continue  # nothing was applied; try the next update
            bad_updates = 0
            losses[step] = step_loss
            if on_update is not None:
                on_update(step, step_loss)
    return losses


def _clip_img_width(network):
    mapper = getattr(network, "clip_img_mapper", None)
    return mapper.in_features if mapper is not None else 768


def _nonfinite_message(count, step, precision, start_step, losses):
    last_good = max(losses) if losses else start_step
    advice = ("Stage C is known to overflow in fp16: choose precision bf16 (GPUs from RTX 30xx / A100 on) or fp32, "
              "or lower the learning rate" if precision.name == "fp16"
              else "lower the learning rate, or check the dataset and the model weights for broken values")
    return (f"training stopped at step {step}: the loss or its gradients were not finite (inf/NaN) for {count} "
            f"updates in a row in {precision.name}. {advice}. The last finite update was step {last_good}; "
            "the LoRA saved up to then is kept.")
