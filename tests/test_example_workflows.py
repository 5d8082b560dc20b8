"""The bundled workflows: the UI-format templates the template browser shows, and their API twins.

Each `example_workflows/api/<name>_api.json` (API format, what host tests queue) has a template
`example_workflows/<name>.json` made from it by the host's own editor (scripts/make_ui_workflows.py);
tests/test_editor_browser.py checks in the editor that each template exports exactly its twin.
These tests check, without a browser, that every twin has its template and thumbnail, that the
host offers them, and that each template runs as the editor queues it (the workflow embedded in
the output PNG).
"""
import copy
import json

import pytest
from conftest import REPO_ROOT

from devtools import standin_models as standins

EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = sorted(p.name.removesuffix("_api.json") for p in (EXAMPLES / "api").glob("*_api.json"))


def load(path):
    return json.loads(path.read_text())


def without_meta(prompt):
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def test_every_api_workflow_has_a_template_and_a_thumbnail_and_nothing_else_is_there():
    assert NAMES, "no API workflows in example_workflows/api/"
    templates = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert templates == NAMES, f"templates {templates} do not match the API workflows {NAMES}: run scripts/make_ui_workflows.py"
    for name in NAMES:
        assert (EXAMPLES / f"{name}.jpg").read_bytes()[:3] == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG thumbnail"


@pytest.mark.parametrize("name", NAMES)
def test_template_holds_the_same_nodes_and_links_as_its_twin(name):
    """A cheap check of what the browser test proves in full: same node ids and types, same links."""
    ui, api = load(EXAMPLES / f"{name}.json"), load(EXAMPLES / "api" / f"{name}_api.json")
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    ui_links = {(str(origin), slot, str(target)) for _, origin, slot, target, _, _ in ui["links"]}
    api_links = {(value[0], value[1], node_id) for node_id, node in api.items()
                 for value in node["inputs"].values() if isinstance(value, list) and len(value) == 2}
    assert ui_links == api_links


def test_host_lists_and_serves_every_template(host_server):
    pack = host_server.pack_link.name
    assert sorted(host_server.get_json("/api/workflow_templates").get(pack, [])) == NAMES
    for name in NAMES:
        assert host_server.get_json(f"/api/workflow_templates/{pack}/{name}.json") == load(EXAMPLES / f"{name}.json")
        status, body = host_server.request("GET", f"/api/workflow_templates/{pack}/{name}.jpg", raw=True)
        assert status == 200 and body[:3] == b"\xff\xd8\xff"


@pytest.fixture(scope="module")
def standin_models(host_server, tmp_path_factory):
    written = standins.write_standin_models(tmp_path_factory.mktemp("standins"))
    return {role: host_server.add_model(path.parent.name, path) for role, path in written.items()}


def test_text_to_image_runs_on_the_host_as_the_editor_queues_it(host_server, standin_models, host_clip_g):
    ui = load(EXAMPLES / "text_to_image.json")
    prompt = load(EXAMPLES / "api" / "text_to_image_api.json")
    prompt["5"]["inputs"]["clip_name"] = host_clip_g
    prompt["8"]["inputs"].update(width=256, height=256)
    prompt["9"]["inputs"]["steps"] = 2
    prompt["10"]["inputs"]["steps"] = 2
    # As the editor queues it: the UI graph rides along and SaveImage embeds it in the PNG.
    result = host_server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": copy.deepcopy(ui)}})
    assert result.error is None, f"the prompt failed: {result.error}"
    images = host_server.output_images(result)
    assert len(images) == 1 and images[0].format == "PNG" and images[0].size == (256, 256)
    assert json.loads(images[0].info["workflow"]) == ui
    assert without_meta(json.loads(images[0].info["prompt"])) == without_meta(prompt)
