"""Every model file the bundled templates name, as tiny seeded stand-ins under the released names,
placed in a running host's model folders. The template maker (scripts/make_ui_workflows.py) and the
browser tests use the same set, so a template that opens cleanly for one opens cleanly for the other."""
from pathlib import Path

from devtools import standin_clip_g, standin_clip_vision, standin_controlnets, standin_models

CLIP_G_NAME = "stable_cascade_clip_g.safetensors"
CLIP_VISION_NAME = "clip_vit_large_patch14.safetensors"
LORA_NAME = "stage_c_lora.safetensors"


def write_standin_lora(stage_c_path, out_path):
    """A tiny original-format LoRA (one learned token) for the stand-in Stage C, so that the LoRA
    template's loader finds a file of the right kind."""
    import torch
    from safetensors.torch import load_file, save_file

    from devtools.pack_env import register_pack

    register_pack()
    from stable_cascade_pack.lora import structure
    from stable_cascade_pack.stages.checkpoint import extract

    stage_c, _ = extract(load_file(str(stage_c_path)), want="stage_c")
    shapes = {k: tuple(v.shape) for k, v in stage_c.items()}
    tensors = {"embeddings.embeddings": torch.zeros(1, 1280), "embeddings.indices": torch.tensor([49408])}
    for n, (in_width, out_rows) in enumerate(structure.original_lora_shapes(shapes)):
        tensors[f"weights.{n}.lora_down"] = torch.zeros(4, in_width)
        tensors[f"weights.{n}.lora_up"] = torch.zeros(out_rows, 4)
    save_file(tensors, str(out_path))
    return out_path


def install_template_standins(server, scratch: Path) -> tuple[dict, dict]:
    """Writes the stand-ins under `scratch` and adds them to `server`; returns ({role: name in the
    host}, {role: written file})."""
    scratch = Path(scratch)
    written = standin_models.write_standin_models(scratch / "models")
    written.update(standin_controlnets.write_standin_controlnets(scratch / "models"))
    names = {role: server.add_model(path.parent.name, path) for role, path in written.items()}
    names["lora"] = server.add_model("loras", write_standin_lora(written["stage_c"], scratch / LORA_NAME))
    names["clip_g"] = server.add_model("text_encoders", standin_clip_g.standin_clip_g_path(), name=CLIP_G_NAME)
    names["clip_vision"] = server.add_model("clip_vision", standin_clip_vision.standin_clip_vision_path(),
                                            name=CLIP_VISION_NAME)
    return names, written
