"""The bundled LoRA workflow on the real host: the template browser lists it, and it runs with an original-format LoRA (a learned token typed in the prompt). Bad LoRA input
gets a message naming the problem, and the server keeps serving."""
import json

import pytest
import torch
from conftest import REPO_ROOT
from safetensors.torch import load_file, save_file

from devtools import standin_models

EXAMPLES = REPO_ROOT / "example_workflows"
UI_WORKFLOW = EXAMPLES / "lora_text_to_image.json"
API_WORKFLOW = EXAMPLES / "api" / "lora_text_to_image_api.json"
LORA_NODE = "13"



def load(path):
    return json.loads(path.read_text())


def without_meta(prompt):
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


@pytest.fixture(scope="module")
def object_info(host_server):
    return host_server.object_info()


@pytest.fixture(scope="module")
def models(host_server, host_clip_g, tmp_path_factory):
    """Stand-in models, and original-format LoRAs for the stand-in Stage C (one new token + one existing row)."""
    from stable_cascade_pack.lora import structure
    from stable_cascade_pack.stages.checkpoint import extract

    folder = tmp_path_factory.mktemp("lora_standins")
    written = standin_models.write_standin_models(folder)
    names = {role: host_server.add_model(path.parent.name, path) for role, path in written.items()}
    stage_c, _ = extract(load_file(str(written["stage_c"])), want="stage_c")
    shapes = {k: tuple(v.shape) for k, v in stage_c.items()}
    generator = torch.Generator().manual_seed(17)
    tensors = {"embeddings.embeddings": torch.randn(2, 1280, generator=generator) * 0.02,
               "embeddings.indices": torch.tensor([49408, 1929], dtype=torch.int64)}
    for n, (in_width, out_rows) in enumerate(structure.original_lora_shapes(shapes)):
        tensors[f"weights.{n}.lora_down"] = torch.randn(4, in_width, generator=generator) * 0.2
        tensors[f"weights.{n}.lora_up"] = torch.randn(out_rows, 4, generator=generator) * 0.2
    save_file(tensors, str(folder / "stage_c_lora.safetensors"))
    save_file({"lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(8, 2),
               "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(2, 8)}, str(folder / "sdxl_lora.safetensors"))
    names["lora"] = host_server.add_model("loras", folder / "stage_c_lora.safetensors")
    names["sdxl_lora"] = host_server.add_model("loras", folder / "sdxl_lora.safetensors")
    names["clip_g"] = host_clip_g
    return names


def small_prompt(object_info, models, **lora_inputs):
    # The API twin: tests/test_editor_browser.py checks in the editor that the template exports exactly it.
    prompt = load(API_WORKFLOW)
    prompt["5"]["inputs"]["clip_name"] = models["clip_g"]
    prompt["8"]["inputs"].update(width=256, height=256)
    prompt["9"]["inputs"]["steps"] = 2
    prompt["10"]["inputs"]["steps"] = 2
    prompt[LORA_NODE]["inputs"].update({"lora_name": models["lora"], **lora_inputs})
    return prompt


def test_ui_workflow_is_a_listed_template(host_server, object_info):
    ui = load(UI_WORKFLOW)
    pack = host_server.pack_link.name
    assert "lora_text_to_image" in host_server.get_json("/api/workflow_templates").get(pack, [])
    assert host_server.get_json(f"/api/workflow_templates/{pack}/lora_text_to_image.json") == ui


def test_missing_tokens_and_a_foreign_lora_are_named_then_the_workflow_runs(host_server, object_info, models):
    result = host_server.run_prompt(small_prompt(object_info, models, tokens=""))
    assert result.error is not None and result.error["node_id"] == LORA_NODE
    assert "learned 1 new token(s) (ids [49408]) but 0 were given" in result.error["exception_message"]

    result = host_server.run_prompt(small_prompt(object_info, models, lora_name=models["sdxl_lora"]))
    assert result.error is not None and "is a LoRA for an SD1.x/SD2.x/SDXL UNet" in result.error["exception_message"]

    prompt = small_prompt(object_info, models)
    assert "[fernando]" in prompt["6"]["inputs"]["text"]
    result = host_server.run_prompt(prompt)
    assert result.error is None, f"the prompt failed: {result.error}"
    images = host_server.output_images(result)
    assert len(images) == 1 and images[0].size == (256, 256)


def test_the_editor_route_tells_a_stage_c_lora_from_a_foreign_one(host_server, models):
    """What the LoRA loader shows in the editor (nodes/web_routes.py), from the files' headers only."""
    files = host_server.get_json("/stable_cascade/file_kinds?node=SCPack_StageCLoraLoader&input=lora_name")["files"]
    ours, foreign = files[models["lora"]], files[models["sdxl_lora"]]
    assert ours["fits"] is True and "rank 4" in ours["summary"] and "2 learned token row(s)" in ours["summary"], ours
    assert foreign["fits"] is False and "SDXL" in foreign["summary"], foreign
