"""(Re)make every template the host's template browser shows, with the host's own editor
(devtools/ui_workflows.py says how). tests/test_editor_browser.py checks the result the other way:
`graphToPrompt()` of each template equals its API twin.

    "$(bash scripts/setup_env.sh --print-python)" scripts/make_ui_workflows.py [name ...]
"""
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
from devtools import standin_clip_g, standin_clip_vision, standin_controlnets, standin_models  # noqa: E402
from devtools.editor_browser import open_editor, prepare_settings  # noqa: E402
from devtools.host_server import HostServer  # noqa: E402
from devtools.ui_workflows import build_all  # noqa: E402


def write_standin_lora(stage_c_path, out_path):
    """A tiny original-format LoRA (one learned token) for the stand-in Stage C, so that the LoRA
    template's loader finds a file of the right kind while its thumbnail is taken."""
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


def main(names):
    with tempfile.TemporaryDirectory() as scratch:
        server = HostServer(Path(scratch) / "base")
        # Stand-ins under the released names, so the loaders find what the templates name.
        written = standin_models.write_standin_models(Path(scratch) / "models")
        written.update(standin_controlnets.write_standin_controlnets(Path(scratch) / "models"))
        for path in written.values():
            server.add_model(path.parent.name, path)
        server.add_model("loras", write_standin_lora(written["stage_c"], Path(scratch) / "stage_c_lora.safetensors"))
        server.add_model("text_encoders", standin_clip_g.standin_clip_g_path(), name="stable_cascade_clip_g.safetensors")
        server.add_model("clip_vision", standin_clip_vision.standin_clip_vision_path(), name="clip_vit_large_patch14.safetensors")
        # The picture the image templates load (a plain gradient: the thumbnail shows where it goes).
        from PIL import Image

        Image.linear_gradient("L").resize((512, 384)).convert("RGB").save(server.input_dir / "example.png")
        server.start()
        try:
            prepare_settings(server)
            with open_editor(server.url, server.pack_link.name) as editor:
                build_all(editor, names)
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
