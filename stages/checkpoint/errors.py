"""The one error type of checkpoint handling, and which loader takes which kind of file.

Every message names the file, what was expected, what the file actually is and which loader
takes it, so a user who picked the wrong file in a dropdown knows what to do next.
"""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or is not what the loader that opened it needs."""


# The single place that names the loaders; messages and the web route read it.
LOADER_FOR_KIND = {
    "stage_c": "'Load Stage C Prior (Stable Cascade)'",
    "stage_b": "'Load Stage B Decoder (Stable Cascade)'",
    "stage_a": "'Load Stage A VAE (Stable Cascade)'",
    "effnet": "'Load Stage C VAE (Stable Cascade)' (encoder_name)",
    "previewer": "'Load Stage C VAE (Stable Cascade)' (previewer_name)",
    "stage_c_coder": "'Load Stage C VAE (Stable Cascade)'",
    "bundled_stage_c": "'Load Stage C Prior (Stable Cascade)'",
    "bundled_stage_b": "'Load Stage B Decoder (Stable Cascade)'",
    "controlnet": "the host's 'Load ControlNet Model' node (this pack's ControlNet nodes are not written yet)",
    "lora": "the host's 'LoraLoader' node (this pack's LoRA loader is not written yet)",
    "text_encoder": "the host's 'Load CLIP' node with type 'stable_cascade'",
    "clip_vision": "the host's 'Load CLIP Vision' node",
    "unknown_unet": "the host's 'Load Checkpoint' or 'Load Diffusion Model' node",
    "other_vae": "the host's 'Load VAE' node",
}

# What each loader asks for, as the second half of "... but the Stage C loader needs ___".
WANTED_FILE = {
    "stage_c": "a Stage C file (stage_c*.safetensors)",
    "stage_b": "a Stage B file (stage_b*.safetensors)",
    "stage_a": "a Stage A file (stage_a.safetensors)",
    "effnet": "an EfficientNet encoder file (effnet_encoder.safetensors)",
    "previewer": "a Previewer file (previewer.safetensors)",
    "stage_c_coder": "an EfficientNet encoder or Previewer file",
    "controlnet": "a Stable Cascade ControlNet file",
    "lora": "a Stable Cascade LoRA file",
    "text_encoder": "a CLIP-G text encoder file",
    "clip_vision": "a CLIP vision file",
}

LOADER_NAME = {
    "stage_c": "Stage C loader",
    "stage_b": "Stage B loader",
    "stage_a": "Stage A loader",
    "effnet": "EfficientNet encoder loader",
    "previewer": "Previewer loader",
    "stage_c_coder": "Stage C VAE loader",
    "controlnet": "ControlNet loader",
    "lora": "LoRA loader",
    "text_encoder": "text encoder loader",
    "clip_vision": "CLIP vision loader",
}


def wrong_file(source_name, what_it_is, kind, want):
    """`source_name` holds `what_it_is` (kind `kind`), but the loader for `want` was used."""
    message = (
        f"{source_name} is {what_it_is}, but the {LOADER_NAME.get(want, want + ' loader')} "
        f"needs {WANTED_FILE.get(want, want)}."
    )
    if kind in LOADER_FOR_KIND:
        message += f" Load it with {LOADER_FOR_KIND[kind]} instead."
    else:
        message += " It matches no known Stable Cascade layout; check that the download finished and is the file you meant."
    return CheckpointError(message)


NETWORK_NAME = {
    "stage_c": "Stage C",
    "stage_b": "Stage B",
    "stage_a": "Stage A",
    "effnet": "EfficientNet encoder",
    "previewer": "Previewer",
    "stage_c_coder": "EfficientNet encoder/Previewer",
    "controlnet": "ControlNet",
    "lora": "LoRA",
    "text_encoder": "text encoder",
    "clip_vision": "CLIP vision model",
}


def missing_part(source_name, what_it_is, kind, want):
    """A bundled file was opened for a network it does not contain."""
    wanted = NETWORK_NAME.get(want, want)
    message = (
        f"{source_name} is {what_it_is}; it holds no {wanted}. The "
        f"{LOADER_NAME.get(want, want + ' loader')} needs {WANTED_FILE.get(want, 'a ' + wanted + ' file')}."
    )
    if kind in LOADER_FOR_KIND:
        message += f" Load it with {LOADER_FOR_KIND[kind]} instead."
    return CheckpointError(message)
