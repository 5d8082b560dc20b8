"""The one error type of LoRA handling."""


class LoraError(ValueError):
    """A LoRA file is unreadable, is for another model, or does not fit the Stage C it is applied to."""
