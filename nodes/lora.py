"""LoRA nodes: load a Stage C LoRA (any format, learned tokens included) onto MODEL and CLIP; save one."""
import logging
import os

import folder_paths
from comfy_api.latest import io

from ..lora import LoraError, load_lora_file, structure
from ..lora.save import save_lora, to_comfyui_keys, to_original_keys
from ..lora.tokens import parse_token_lines
from . import lora_patches
from .choices import choice_problems
from .host_models import cascade_stage_of
from .input_checks import check_finite_numbers
from .model_files import filenames, full_path

CATEGORY = "stable_cascade/lora"
LORA_FOLDERS = ("loras",)
SAVE_FORMATS = ["comfyui", "original"]


def _check_stage_c(model, node):
    stage = cascade_stage_of(model)
    if stage != "c":
        found = {"b": "a Stage B model", None: "not a Stable Cascade model"}[stage]
        raise ValueError(f"{node}: 'model' is {found}; this node patches Stage C (connect a Stage C loader's output).")


def read_lora_for(model, lora_name):
    """The LoRA file converted for this Stage C MODEL (LoraError names the file and what is wrong)."""
    return load_lora_file(full_path(lora_name, *LORA_FOLDERS), lora_patches.stage_c_shapes(model))


class StageCLoraLoader(io.ComfyNode):
    @classmethod
    def file_inputs(cls):  # the editor marks a file that is no LoRA (nodes/web_routes.py)
        return {"lora_name": (LORA_FOLDERS, "lora")}

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_StageCLoraLoader",
            display_name="Load Stage C LoRA (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Applies a Stable Cascade Stage C LoRA from models/loras: the original training code's lora.safetensors "
                "(with its learned tokens), ComfyUI/OneTrainer lora_prior_unet_ files and kohya lora_unet_ files. The format "
                "and the Stage C size it was trained for are read from the file; a LoRA for another model is refused. "
                "Returns patched copies: the inputs stay unchanged, so several loaders chain and removing one restores the "
                "earlier result exactly."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Stage C model (from Load Stage C or the host's UNETLoader)."),
                io.Combo.Input("lora_name", options=filenames(*LORA_FOLDERS), tooltip="LoRA file in models/loras."),
                io.Float.Input("strength_model", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How strongly the LoRA changes Stage C (1 = as trained, 0 = not at all, negative inverts)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="CLIP-G text encoder (type stable_cascade). Needed for learned tokens and text encoder LoRAs."),
                io.Float.Input("strength_clip", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Strength of the text encoder LoRA and of the learned token deltas."),
                io.String.Input("tokens", default="", multiline=True,
                                tooltip="Learned new tokens of an original-format LoRA, one per line in training order: the token "
                                        "and its init pattern from the training config, e.g. '[fernando] ^dog</w>'. The file "
                                        "stores neither; the node says when some are missing."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="Stage C with the LoRA."),
                io.Clip.Output(display_name="clip", tooltip="CLIP with the learned tokens and text encoder LoRA (the input CLIP when none was connected)."),
                io.String.Output(display_name="info", tooltip="What the file is and what was applied."),
            ],
        )

    @classmethod
    def validate_inputs(cls, lora_name, **_):
        return choice_problems(lora_name=(lora_name, filenames(*LORA_FOLDERS)))

    @classmethod
    def execute(cls, model, lora_name, strength_model=1.0, clip=None, strength_clip=1.0, tokens=""):
        _check_stage_c(model, "Load Stage C LoRA (Stable Cascade)")
        check_finite_numbers("Load Stage C LoRA (Stable Cascade)", strength_model=strength_model, strength_clip=strength_clip)
        lora = read_lora_for(model, lora_name)
        notes = [lora.summary()]
        patched_model = lora_patches.patch_model(model, lora, strength_model) if lora.unet else model
        patched_clip = clip
        needs_clip = lora.text_encoder or lora.tokens is not None or lora.embeddings
        if needs_clip and clip is None:
            notes.append("the text encoder part and learned tokens were NOT applied: connect a CLIP")
            logging.warning("%s: %s", lora_name, notes[-1])
        elif needs_clip:
            patched_clip, clip_notes = lora_patches.patch_clip(clip, lora, strength_clip, parse_token_lines(tokens), lora_name)
            notes += clip_notes
        return io.NodeOutput(patched_model, patched_clip, "; ".join(notes))


class SaveStageCLora(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SCPack_SaveStageCLora",
            display_name="Convert Stage C LoRA (Stable Cascade)",
            category=CATEGORY,
            description=(
                "Reads a Stage C LoRA in any format this pack loads and writes it to models/loras either with ComfyUI's "
                "lora_prior_unet_ keys (for other tools) or in the original training code's layout (for the original code). "
                "The values are kept: every patched weight changes exactly as before."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The Stage C the LoRA is for (gives the module order of the original layout)."),
                io.Combo.Input("lora_name", options=filenames(*LORA_FOLDERS), tooltip="LoRA file in models/loras to convert."),
                io.Combo.Input("format", options=SAVE_FORMATS, default="comfyui",
                               tooltip="comfyui: lora_prior_unet_/lora_prior_te_ keys. original: weights.N.lora_down/up + "
                                       "embeddings.* (attention only, no text encoder)."),
                io.String.Input("filename", default="stage_c_lora_converted",
                                tooltip="Name of the new file in models/loras (.safetensors is added)."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name, format, filename, **_):
        problems = choice_problems(lora_name=(lora_name, filenames(*LORA_FOLDERS)), format=(format, SAVE_FORMATS))
        if problems is True and (not filename.strip() or os.path.basename(filename) != filename):
            return f"filename: {filename!r} must be a plain file name (no folders)"
        return problems

    @classmethod
    def execute(cls, model, lora_name, format, filename):
        _check_stage_c(model, "Convert Stage C LoRA (Stable Cascade)")
        shapes = lora_patches.stage_c_shapes(model)
        lora = read_lora_for(model, lora_name)
        tensors = to_original_keys(lora, shapes) if format == "original" else to_comfyui_keys(lora)
        name = filename.removesuffix(".safetensors") + ".safetensors"
        path = os.path.join(folder_paths.get_folder_paths("loras")[0], name)
        if os.path.exists(path):
            raise LoraError(f"{name} already exists in models/loras; choose another filename")
        save_lora(path, tensors, metadata={"converted_from": lora_name, "format": format,
                                           "trained_for": structure.describe_stage_c(shapes)})
        return io.NodeOutput(path)


NODES = [StageCLoraLoader, SaveStageCLora]
