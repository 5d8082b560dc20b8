"""Reading a LoRA file: the formats are tried in order; each `load` returns a StageCLora or None."""
import os

from . import format_comfyui, format_kohya, format_onetrainer, format_original, named_modules
from .errors import LoraError

FORMATS = (format_original, format_onetrainer, format_comfyui, format_kohya)


def read_lora(state_dict, target_shapes, source_name="LoRA"):
    """StageCLora for the Stage C whose pack-layout {key: shape} is `target_shapes`; LoraError otherwise."""
    if not state_dict:
        raise LoraError(f"{source_name} holds no tensors: it is not a LoRA (or the download did not finish).")
    for fmt in FORMATS:
        lora = fmt.load(state_dict, target_shapes, source_name)
        if lora is not None:
            return lora
    raise LoraError(f"{source_name} is {_what_else(state_dict)}, not a Stable Cascade LoRA; this loader reads "
                    "the original training format (weights.N.lora_down), ComfyUI/OneTrainer lora_prior_unet_ keys and "
                    "kohya lora_unet_ keys.")


def identify_lora(shapes, source_name="LoRA"):
    """(format, trained_for) of a LoRA from its {key: shape} alone (a safetensors header), or None.

    For the editor's file marks and for messages; reads no weights.
    """
    from ..stages.checkpoint.header import key_shapes

    shapes, _ = key_shapes(shapes)  # tensors, (dtype, shape) header entries or bare shapes
    if format_original.claims(shapes):
        return "original", format_original.trained_for(shapes, source_name)
    for name, fmt in (("onetrainer", format_onetrainer), ("comfyui", format_comfyui), ("kohya", format_kohya)):
        if fmt.claims(shapes):
            rename = format_onetrainer.to_pack_name if name == "onetrainer" else (lambda n: n)
            modules = named_modules.group(shapes)
            unet = {m: rename(named_modules.unet_name(m)) for m in modules if named_modules.unet_name(m) is not None}
            other = named_modules.other_network(unet.values()) if unet else None
            return name, other or named_modules.trained_for(shapes, unet)
    return None


def _what_else(state_dict):
    from ..stages.checkpoint.identify import identify, what_it_is
    try:
        return what_it_is(identify(state_dict))
    except Exception:  # identification is only for the message
        return "an unrecognised file"


def load_lora_file(path, target_shapes):
    """read_lora() from a .safetensors file; a truncated or corrupt file gets a LoraError naming it."""
    from safetensors.torch import load_file

    from ..stages.checkpoint import CheckpointError, read_safetensors_header

    name = os.path.basename(str(path))
    if str(path).lower().endswith((".safetensors", ".sft")):
        try:
            read_safetensors_header(path)
            state_dict = load_file(str(path))
        except CheckpointError as error:
            raise LoraError(str(error)) from error
        except Exception as error:
            raise LoraError(f"{name} could not be read as safetensors ({type(error).__name__}: {error}).") from error
    else:
        raise LoraError(f"{name}: LoRA files are read as .safetensors only (never unpickled).")
    return read_lora(state_dict, target_shapes, name)
