"""What a checkpoint holds, from its keys and shapes alone.

`identify` answers kind (which network or file type), variant, layout, size and dtype, and for
the cascade networks the constructor kwargs; `describe` turns that into one line of text for
messages and the web UI. Detection follows official.md §11 and the host's model_detection.py.
"""
import re
from dataclasses import dataclass, field

from . import layouts
from .configs import infer_config
from .errors import CheckpointError
from .header import key_shapes
from .kinds import file_kind

# Tensors that are not parameters: BatchNorm statistics, LoRA token ids.
_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked", "embeddings.indices")


@dataclass(frozen=True)
class CheckpointInfo:
    kind: str  # stage_c, stage_b, stage_a, effnet, previewer, stage_c_coder, bundled_stage_c, bundled_stage_b,
    #            bundle, controlnet, lora, text_encoder, clip_vision, unknown_unet, other_vae, empty, unknown
    variant: str | None = None  # big/lite/custom; canny/inpainting/super_resolution/identity; lora format; UNet family
    layout: str | None = None  # original, host, diffusers, bundled
    parameter_count: int = 0
    dtype: str | None = None  # fp32, bf16, fp16, ... or "mixed (bf16, fp32)"
    config: dict | None = None  # original constructor kwargs (cascade networks only)
    parts: dict = field(default_factory=dict)  # bundles: {kind: (key prefix, CheckpointInfo)}


def identify(state_dict_or_shapes):
    """CheckpointInfo for a state dict, a safetensors header ({key: (dtype, shape)}) or {key: shape}."""
    shapes, dtypes = key_shapes(state_dict_or_shapes)
    try:
        return _identify(shapes, dtypes)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
        if isinstance(error, CheckpointError):
            raise
        # Shapes that contradict each other in a way no rule above names; still the pack's error.
        raise CheckpointError(f"its tensor shapes do not fit together ({type(error).__name__}: {error})") from error


def _identify(shapes, dtypes):
    size = dict(parameter_count=_parameter_count(shapes), dtype=_dtype_summary(dtypes))
    if not shapes:
        return CheckpointInfo("empty", **size)
    keys = shapes.keys()

    bundle = layouts.split_by_prefix(keys, layouts.BUNDLE_PREFIXES)
    if "unet" in bundle or (bundle and all(k.startswith(tuple(layouts.BUNDLE_PREFIXES)) for k in keys)):
        return _identify_bundle(shapes, dtypes, bundle, size)

    if any(k.startswith(("lora_unet_", "lora_prior_unet_", "lora_te", "lora_prior_te")) for k in keys):
        return CheckpointInfo("lora", "comfyui", **size)
    if "embeddings.indices" in shapes or any(re.match(r"weights\.\d+\.lora_(down|up)$", k) for k in keys):
        return CheckpointInfo("lora", "original", **size)
    if any(re.search(r"\.(lora_down|lora_up|lora_A|lora_B|hada_w1_a|lokr_w1)(\.weight)?$", k) for k in keys):
        return CheckpointInfo("lora", "other", **size)

    if "clf.1.weight" in shapes and ("clip_txt_mapper.weight" in shapes or "clip_mapper.weight" in shapes
                                     or "clip_txt_pooled_mapper.weight" in shapes):
        return _identify_unet(shapes, size)
    if any(k.startswith("projections.") for k in keys) and any(k.startswith("backbone.") for k in keys):
        return CheckpointInfo("controlnet", _controlnet_variant(shapes), "original", **size)
    if "vquantizer.codebook.weight" in shapes:
        return _with_config("stage_a", shapes, size)
    if "mapper.0.weight" in shapes and any(k.startswith("backbone.") for k in keys):
        return _with_config("effnet", shapes, size)
    if "blocks.0.weight" in shapes and all(k.startswith("blocks.") for k in keys):
        return _with_config("previewer", shapes, size)
    coder = layouts.split_by_prefix(keys, layouts.CODER_PREFIXES)
    if coder and all(k.startswith(tuple(layouts.CODER_PREFIXES)) for k in keys):
        return _identify_coder(shapes, dtypes, coder, size)

    if any("vision_model.encoder.layers." in k or k.startswith("visual.transformer.") for k in keys):
        return CheckpointInfo("clip_vision", **size)
    if any("text_model.encoder.layers." in k or k.startswith("transformer.resblocks.") for k in keys):
        return CheckpointInfo("text_encoder", **size)
    family = _other_unet_family(keys)
    if family:
        return CheckpointInfo("unknown_unet", family, **size)
    if any(k.startswith(("encoder.conv_in.", "decoder.conv_in.", "first_stage_model.")) for k in keys):
        return CheckpointInfo("other_vae", **size)
    return CheckpointInfo("unknown", **size)


def _identify_unet(shapes, size):
    kind = "stage_c" if "clip_txt_mapper.weight" in shapes else "stage_b"
    layout = layouts.unet_layout(shapes)
    pack_shapes = layouts.apply_key_map(shapes, layouts.unet_key_map(shapes, layout, kind))
    config, variant = infer_config(kind, pack_shapes)
    return CheckpointInfo(kind, variant, layout, config=config, **size)


def _with_config(kind, shapes, size):
    config, _ = infer_config(kind, shapes)
    return CheckpointInfo(kind, None, "original", config=config, **size)


def _sub(shapes, dtypes, prefix):
    return ({k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)},
            {k[len(prefix):]: v for k, v in dtypes.items() if k.startswith(prefix)})


def _identify_coder(shapes, dtypes, coder, size):
    parts = {}
    for part, prefix in coder.items():
        info = _identify(*_sub(shapes, dtypes, prefix))
        parts[info.kind] = (prefix, info)
    return CheckpointInfo("stage_c_coder", None, "bundled", parts=parts, **size)


def _identify_bundle(shapes, dtypes, bundle, size):
    parts = {}
    for part, prefix in bundle.items():
        info = _identify(*_sub(shapes, dtypes, prefix))
        parts[info.kind] = (prefix, info)
    unet = parts.get("stage_c") or parts.get("stage_b")
    if unet is None:
        if "unknown_unet" in parts:  # e.g. an SD1.5/SDXL all-in-one checkpoint
            return CheckpointInfo("unknown_unet", parts["unknown_unet"][1].variant, "bundled", parts=parts, **size)
        return CheckpointInfo("bundle", None, "bundled", parts=parts, **size)
    kind = "bundled_stage_c" if "stage_c" in parts else "bundled_stage_b"
    return CheckpointInfo(kind, unet[1].variant, "bundled", parts=parts, **size)


def _controlnet_variant(shapes):
    """The released ControlNets differ in their first layer (official.md §6.3, §11)."""
    if "backbone.0.0.weight" in shapes:  # EfficientNet bottleneck
        return {1: "canny", 3: "canny", 4: "inpainting", 16: "super_resolution"}.get(shapes["backbone.0.0.weight"][1], "custom")
    first = shapes.get("backbone.0.weight", ())
    if len(first) == 4 and first[1] == 16 and first[2] == 1:  # 'large' 1x1-conv bottleneck
        return "super_resolution"
    if len(first) == 4 and first[1] == 512:  # 'simple' bottleneck on 512-d face embeddings
        return "identity"
    return "custom"


def _other_unet_family(keys):
    keys = list(keys)

    def has(fragment):
        return any(fragment in k for k in keys)

    if has("input_blocks.0.0.weight"):
        return "SDXL-style UNet" if has("label_emb.0.0.weight") else "SD1.x/SD2.x-style UNet"
    if has("down_blocks.0.resnets.0.") and has("conv_in.weight"):
        return "diffusers UNet2DConditionModel"
    if has("double_blocks.0."):
        return "Flux-style transformer"
    if has("joint_blocks.0."):
        return "SD3-style MMDiT"
    if has("transformer_blocks.0.") or has("blocks.0.attn"):
        return "DiT-style transformer"
    return None


def _parameter_count(shapes):
    total = 0
    for key, shape in shapes.items():
        if not key.endswith(_BUFFER_SUFFIXES):
            count = 1
            for dim in shape:
                count *= dim
            total += count
    return total


def _dtype_summary(dtypes):
    floats = sorted({d for d in dtypes.values() if d.startswith(("fp", "bf"))})
    if not floats:
        return None
    return floats[0] if len(floats) == 1 else f"mixed ({', '.join(floats)})"


# -- text -----------------------------------------------------------------------------------------

_LORA_FORMATS = {"original": "original StableCascade training format", "comfyui": "ComfyUI/kohya key format",
                 "other": "unrecognised key format"}
_LAYOUT_TEXT = {"original": "original layout", "host": "ComfyUI layout", "diffusers": "diffusers layout",
                "bundled": "ComfyUI bundled checkpoint"}


def _description(kind):
    return file_kind(kind).description or kind


def format_parameter_count(count):
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e8:
        return f"{count / 1e9:.2f}B"
    return f"{count / 1e6:.1f}M"


def network_name(info):
    """'Stage B (lite, 0.70B)', 'Stable Cascade ControlNet (canny)', 'SDXL-style UNet (not Stable Cascade)', ..."""
    size = format_parameter_count(info.parameter_count)
    if info.kind in ("stage_c", "stage_b"):
        return f"{_description(info.kind)} ({info.variant}, {size})"
    if info.kind == "bundle":
        held = ", ".join(network_name(part) for _, part in info.parts.values())
        return f"ComfyUI-style checkpoint ({held})"
    if info.kind in ("bundled_stage_c", "bundled_stage_b"):
        held = ", ".join(network_name(part) for _, part in info.parts.values())
        return f"ComfyUI bundled {'Stage C' if info.kind == 'bundled_stage_c' else 'Stage B'} checkpoint ({held})"
    if info.kind == "controlnet":
        return f"{_description('controlnet')} ({info.variant}, {size})"
    if info.kind == "lora":
        return f"LoRA ({_LORA_FORMATS[info.variant]})"
    if info.kind == "unknown_unet":
        return f"{info.variant} ({size}, not Stable Cascade)"
    if info.kind in ("empty", "unknown"):
        return _description(info.kind)
    return f"{_description(info.kind)} ({size})"


def describe(info):
    """One line for people: 'Stage C lite (1.0B), bf16, original layout'."""
    size = format_parameter_count(info.parameter_count)
    if info.kind in ("stage_c", "stage_b"):
        head = f"{_description(info.kind)} {info.variant} ({size})"
    else:
        head = network_name(info)
    details = [d for d in (info.dtype, _LAYOUT_TEXT.get(info.layout) if not info.parts else None) if d]
    return ", ".join([head, *details])


def what_it_is(info):
    """'a Stage B (lite, 0.70B) checkpoint' — the subject of an error message."""
    name = network_name(info)
    if info.kind in ("empty", "unknown"):
        return f"an {name}" if name[0] in "aeiou" else f"a {name}"
    noun = name if info.kind in ("bundle", "bundled_stage_c", "bundled_stage_b", "lora", "unknown_unet") else f"{name} checkpoint"
    article = "an" if noun[0].lower() in "aeiou" or noun.startswith("SD") else "a"
    return f"{article} {noun}"

