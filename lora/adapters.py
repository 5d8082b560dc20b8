"""What every LoRA format is converted to: low-rank weight deltas keyed by pack-layout weight names.

    delta(W) = strength * (alpha / rank) * up @ down      (alpha None: scale 1)

which is the host's `LoRAAdapter` convention (comfy/weight_adapter/lora.py), so the node hands
`(up, down, alpha)` to that class unchanged; the original training code's `scale = 1 / rank` is
alpha = 1.
"""
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LowRank:
    up: torch.Tensor  # [out, rank] (or [out, rank, 1, 1] for a Conv2d)
    down: torch.Tensor  # [rank, in] (or [rank, in, kh, kw])
    alpha: float | None = None

    @property
    def rank(self):
        return self.down.shape[0]

    @property
    def scale(self):
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self, weight_shape):
        """scale * up @ down in float32, shaped like the weight (for saving and converting, not for sampling)."""
        product = self.up.flatten(1).float() @ self.down.flatten(1).float()
        return (product * self.scale).reshape(weight_shape)


@dataclass(frozen=True)
class TokenDeltas:
    """The original ReToken: `rows[i]` is added to token-embedding row `indices[i]`.

    Indices at or past the text encoder's vocabulary size are tokens the training added; their base
    row (mean of the init pattern's matches) is not in the file (lora/tokens.py builds it).
    """
    indices: list
    rows: torch.Tensor  # [len(indices), width]


@dataclass
class StageCLora:
    """One LoRA file, converted. `trained_for`: 'Stage C 3.6B', 'Stage C lite 1B' or a custom description."""
    format: str  # original | comfyui | onetrainer | kohya
    trained_for: str
    unet: dict = field(default_factory=dict)  # pack-layout weight key -> LowRank
    text_encoder: dict = field(default_factory=dict)  # host LoRA module name (lora_te_...) -> LowRank
    tokens: TokenDeltas | None = None  # original format
    embeddings: dict = field(default_factory=dict)  # token string -> [n_vectors, width] (OneTrainer bundles)

    def summary(self):
        parts = [f"{len(self.unet)} Stage C weights"]
        if self.text_encoder:
            parts.append(f"{len(self.text_encoder)} text encoder weights")
        if self.tokens is not None:
            parts.append(f"{len(self.tokens.indices)} learned token rows")
        if self.embeddings:
            parts.append(f"embeddings {sorted(self.embeddings)}")
        return f"{FORMAT_NAMES[self.format]} LoRA for {self.trained_for}: " + ", ".join(parts)


FORMAT_NAMES = {
    "original": "original StableCascade training",
    "comfyui": "ComfyUI (lora_prior_unet_)",
    "onetrainer": "OneTrainer legacy",
    "kohya": "kohya sd-scripts",
}
