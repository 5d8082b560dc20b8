"""The host's CONDITIONING and LATENT values -> the tensors Stage C and Stage B are called with."""
import torch

CLIP_IMAGE_WIDTH = 768  # ViT-L/14 image embeddings, the original's clip_img

# Conditioning entries the host's own samplers act on but the GDF sampler does not (yet): refusing
# them is better than silently sampling without them. Stage C takes cascade ControlNets.
UNSUPPORTED_ENTRIES = {
    "control": "a ControlNet (ControlNets act on Stage C only)",
    "area": "an area from ConditioningSetArea",
    "mask": "a mask from ConditioningSetMask",
    "gligen": "GLIGEN boxes",
}


def _single_entry(conditioning, input_name, allowed=()):
    if not conditioning:
        raise ValueError(f"'{input_name}' is empty: connect a CLIPTextEncode output")
    if len(conditioning) > 1:
        raise ValueError(
            f"'{input_name}' holds {len(conditioning)} conditionings (e.g. from ConditioningCombine); the GDF sampler takes one. "
            "Use ConditioningConcat to join prompts."
        )
    tokens, extras = conditioning[0]
    unsupported = [what for key, what in UNSUPPORTED_ENTRIES.items() if key not in allowed and extras.get(key) is not None]
    if unsupported:
        raise ValueError(
            f"'{input_name}' carries {', '.join(unsupported)}, which the GDF sampler does not apply; "
            "sample with the host's KSampler for that, or remove it"
        )
    pooled = extras.get("pooled_output")
    if pooled is None:
        raise ValueError(
            f"'{input_name}' has no pooled text embedding: encode the prompt with a CLIP loaded as type 'stable_cascade' (CLIP-G)"
        )
    return tokens, pooled, extras


def to_batch(tensor, batch_size, what):
    if tensor.shape[0] == batch_size:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch_size, *tensor.shape[1:])
    raise ValueError(f"{what} has batch size {tensor.shape[0]} but the latent has {batch_size}")


def _clip_image_embeddings(extras, batch_size):
    """CLIP image embeddings for image variation (from the host's unCLIPConditioning), zeros otherwise."""
    entries = extras.get("unclip_conditioning") or []
    if not entries:
        return torch.zeros(batch_size, 1, CLIP_IMAGE_WIDTH)
    embeds = [entry["clip_vision_output"].image_embeds.unsqueeze(0) * entry["strength"] for entry in entries]
    return to_batch(torch.cat(embeds, dim=1), batch_size, "the CLIP image embedding")


def _check_width(input_name, what, tensor, width, stage):
    """A text encoder other than CLIP-G gives other widths (SD1's CLIP-L: 768, SDXL's pair: 2048)."""
    if tensor.shape[-1] != width:
        raise ValueError(
            f"'{input_name}' has {tensor.shape[-1]}-wide {what} but Stage {stage} needs {width}-wide ones: "
            "encode the prompt with a CLIP loaded as type 'stable_cascade' (CLIP-G)"
        )


def stage_c_inputs(conditioning, batch_size, text_width, input_name, pooled_width=None):
    """clip_text [B,T,1280], clip_text_pooled [B,1,1280], clip_img [B,N,768] for Stage C."""
    tokens, pooled, extras = _single_entry(conditioning, input_name, allowed=("control",))
    _check_width(input_name, "text embeddings", tokens, text_width, "C")
    if pooled_width is not None:
        _check_width(input_name, "pooled text embeddings", pooled, pooled_width, "C")
    return {
        "clip_text": to_batch(tokens, batch_size, f"'{input_name}'").float(),
        "clip_text_pooled": to_batch(pooled.reshape(pooled.shape[0], 1, -1), batch_size, f"'{input_name}'").float(),
        "clip_img": _clip_image_embeddings(extras, batch_size).float(),
    }


def stage_b_inputs(conditioning, stage_c_latent, batch_size, input_name, pooled_width=None):
    """effnet (the Stage C latent) and clip (the pooled text) for Stage B."""
    _, pooled, _ = _single_entry(conditioning, input_name)
    if pooled_width is not None:
        _check_width(input_name, "pooled text embeddings", pooled, pooled_width, "B")
    return {
        "effnet": to_batch(stage_c_latent, batch_size, "the Stage C latent").float(),
        "clip": to_batch(pooled.reshape(pooled.shape[0], 1, -1), batch_size, f"'{input_name}'").float(),
    }
