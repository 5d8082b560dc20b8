"""The bundled workflows: the UI-format graph the template browser loads, and its API-format twin.

Each `example_workflows/<name>.json` (UI format, what users open from the template browser) was
made from `api/<name>_api.json` (API format, what the host tests queue) with
devtools/workflow_formats.py. These tests keep the two equal, check the UI graph against the running
host's node definitions the way the 1.32.9 editor reads them, check that the host offers it as a
template, and run it.
"""
import copy
import json

import pytest
from conftest import REPO_ROOT

from devtools import standin_models as standins
from devtools import workflow_formats as formats

EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.json"))
UI_WORKFLOW = EXAMPLES / "text_to_image.json"

# Input types the editor draws as widgets (comfyui-frontend-package 1.32.9, `ComfyWidgets`).
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "IMAGEUPLOAD", "COLOR",
                "IMAGECOMPARE", "CHART", "GALLERIA", "TEXTAREA"}


def load(path):
    return json.loads(path.read_text())


def without_meta(prompt):
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]}
            for node_id, node in prompt.items()}


@pytest.fixture(scope="module")
def object_info(host_server):
    return host_server.object_info()


def test_every_ui_workflow_has_an_api_twin_and_back():
    assert NAMES and sorted(p.name.removesuffix("_api.json") for p in (EXAMPLES / "api").glob("*_api.json")) == NAMES


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def ui_workflow(name):
    return load(EXAMPLES / f"{name}.json")


@pytest.fixture(scope="module")
def api_workflow(name):
    return load(EXAMPLES / "api" / f"{name}_api.json")


# --- The two files are the same graph -----------------------------------------------------------

def test_ui_workflow_exports_to_its_api_twin(ui_workflow, api_workflow, object_info):
    assert without_meta(formats.ui_to_api(ui_workflow, object_info)) == without_meta(api_workflow)


def test_titles_survive_the_round_trip(ui_workflow, api_workflow, object_info):
    exported = formats.ui_to_api(ui_workflow, object_info)
    assert {k: v["_meta"]["title"] for k, v in exported.items()} == \
        {k: v["_meta"]["title"] for k, v in api_workflow.items()}


def test_api_to_ui_to_api_is_the_identity(api_workflow, object_info):
    api = api_workflow
    assert formats.ui_to_api(formats.api_to_ui(api, object_info), object_info) == \
        {k: {"inputs": v["inputs"], "class_type": v["class_type"], "_meta": v["_meta"]} for k, v in api.items()}


# --- The UI graph is what the 1.32.9 editor expects ---------------------------------------------

def test_workflow_envelope(ui_workflow):
    assert ui_workflow["version"] == 0.4
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        assert key in ui_workflow, key
    node_ids = [n["id"] for n in ui_workflow["nodes"]]
    link_ids = [link[0] for link in ui_workflow["links"]]
    assert len(set(node_ids)) == len(node_ids) and len(set(link_ids)) == len(link_ids)
    assert ui_workflow["last_node_id"] == max(node_ids)
    assert ui_workflow["last_link_id"] == max(link_ids)
    for group in ui_workflow["groups"]:
        assert group["title"] and len(group["bounding"]) == 4
    for node in ui_workflow["nodes"]:
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
        assert node["size"][0] >= 200 and node["size"][1] >= 40, f"node {node['id']} is too small"


def test_node_types_exist_and_every_link_is_typed_consistently(ui_workflow, object_info):
    nodes = {n["id"]: n for n in ui_workflow["nodes"]}
    for node in nodes.values():
        assert node["type"] in object_info, f"node {node['id']}: {node['type']} is not on the host"
    for link_id, origin, origin_slot, target, target_slot, link_type in ui_workflow["links"]:
        produced = object_info[nodes[origin]["type"]]["output"][origin_slot]
        consuming = nodes[target]["inputs"][target_slot]
        declared = {**object_info[nodes[target]["type"]]["input"].get("required", {}),
                    **object_info[nodes[target]["type"]]["input"].get("optional", {})}[consuming["name"]][0]
        assert link_type == produced == declared == consuming["type"], f"link {link_id}"
        assert consuming["link"] == link_id, f"link {link_id}: the target input does not point back"
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"], f"link {link_id}: not in the output's links"
    for node in nodes.values():  # no dangling references either way
        for slot in node.get("inputs", []):
            assert slot["link"] is None or any(link[0] == slot["link"] for link in ui_workflow["links"])


def expected_widget_values(node_info):
    """How many entries the editor keeps in widgets_values for a node, and where the seed
    controls go: one per widget input, plus a "control after generate" combo after an INT that
    asks for one (or, when the spec is silent, one named seed/noise_seed), plus the upload
    button's entry after a file combo with image_upload (Load Image)."""
    count, control_positions = 0, []
    for section in ("required", "optional"):
        for name, spec in node_info["input"].get(section, {}).items():
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            options = spec[1] if len(spec) > 1 else {}
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            count += 1
            count += 1 if kind == "COMBO" and options.get("image_upload") else 0
            control = options.get("control_after_generate")
            if kind == "INT" and (name in ("seed", "noise_seed") if control is None else control):
                control_positions.append(count)
                count += 1
    return count, control_positions


def test_widget_values_match_the_editors_widgets(ui_workflow, object_info):
    for node in ui_workflow["nodes"]:
        count, control_positions = expected_widget_values(object_info[node["type"]])
        values = node.get("widgets_values", [])
        assert len(values) == count, f"node {node['id']} ({node['type']}): {values}"
        for position in control_positions:
            assert values[position] == "fixed", f"node {node['id']}: the seed should stay fixed"


def test_samplers_keep_the_seed_fixed_after_it(ui_workflow):
    for node in ui_workflow["nodes"]:
        if node["type"] in ("SCPack_StageCSampler", "SCPack_StageBSampler"):
            assert node["widgets_values"][:2] == [42, "fixed"]


def test_inputs_list_sockets_in_the_editors_order(ui_workflow, object_info):
    for node in ui_workflow["nodes"]:
        sockets = [s.name for s in formats.socket_specs(object_info[node["type"]])]
        assert [i["name"] for i in node.get("inputs", []) if "widget" not in i] == sockets


# --- Conversion rules on small graphs (no host needed) ------------------------------------------

FAKE_INFO = {
    "Source": {"input": {"required": {}}, "input_order": {"required": []},
               "output": ["LATENT", "INT"], "output_name": ["latent", "number"], "display_name": "Source"},
    "Sink": {"input": {"required": {"latent": ["LATENT", {}], "seed": ["INT", {"default": 0}],
                                    "mode": [["a", "b"], {}], "sizes": ["INT", {"default": 1}]},
                       "optional": {"extra": ["LATENT", {}], "label": ["STRING", {"default": "x"}]}},
             "input_order": {"required": ["latent", "seed", "mode", "sizes"], "optional": ["extra", "label"]},
             "output": [], "output_name": [], "display_name": "Sink", "output_node": True},
}


def test_linked_widget_unconnected_optional_socket_and_control_value():
    api = {"1": {"class_type": "Source", "inputs": {}, "_meta": {"title": "Source"}},
           "2": {"class_type": "Sink", "inputs": {"latent": ["1", 0], "seed": 5, "mode": "b", "sizes": ["1", 1],
                                                  "label": "y"}, "_meta": {"title": "My sink"}}}
    ui = formats.api_to_ui(api, FAKE_INFO, seed_control="randomize")
    sink = next(n for n in ui["nodes"] if n["id"] == 2)
    assert sink["widgets_values"] == [5, "randomize", "b", 1, "y"]  # linked "sizes" keeps its default
    assert [(i["name"], i.get("widget")) for i in sink["inputs"]] == \
        [("latent", None), ("extra", None), ("sizes", {"name": "sizes"})]
    assert sink["title"] == "My sink" and "title" not in ui["nodes"][0]
    assert formats.ui_to_api(ui, FAKE_INFO) == api


def test_export_drops_muted_and_note_nodes_and_wraps_lists():
    ui = formats.api_to_ui({"1": {"class_type": "Source", "inputs": {}},
                            "2": {"class_type": "Sink", "inputs": {"latent": ["1", 0], "seed": 1, "mode": "a",
                                                                   "sizes": 2, "label": "z"}}}, FAKE_INFO)
    ui["nodes"].append({"id": 3, "type": "Note", "pos": [0, 0], "size": [200, 60], "flags": {}, "order": 2,
                        "mode": 0, "properties": {}, "widgets_values": ["a note"]})
    ui["nodes"][1]["widgets_values"][3] = [1, 2]
    exported = formats.ui_to_api(ui, FAKE_INFO)
    assert set(exported) == {"1", "2"} and exported["2"]["inputs"]["sizes"] == {"__value__": [1, 2]}
    ui["nodes"][0]["mode"] = 2  # muted: gone, and so is the link from it
    exported = formats.ui_to_api(ui, FAKE_INFO)
    assert set(exported) == {"2"} and "latent" not in exported["2"]["inputs"]


def test_wrong_widget_count_is_a_clear_error():
    ui = formats.api_to_ui({"2": {"class_type": "Sink", "inputs": {"seed": 1, "mode": "a", "sizes": 2}}}, FAKE_INFO)
    del ui["nodes"][0]["widgets_values"][1]  # as if saved without the control combo
    with pytest.raises(ValueError, match="4 widget values for 5 widgets"):
        formats.ui_to_api(ui, FAKE_INFO)
    with pytest.raises(ValueError, match="not in /object_info"):
        formats.ui_to_api({"nodes": [{"id": 1, "type": "Nope", "mode": 0}], "links": []}, FAKE_INFO)


# --- The host's template browser ----------------------------------------------------------------

def test_host_lists_and_serves_the_template(host_server, name, ui_workflow):
    pack = host_server.pack_link.name
    templates = host_server.get_json("/api/workflow_templates")
    assert name in templates.get(pack, []), templates
    served = host_server.get_json(f"/api/workflow_templates/{pack}/{name}.json")
    assert served == ui_workflow


def test_every_listed_template_is_a_ui_workflow(host_server):
    pack = host_server.pack_link.name
    for name in host_server.get_json("/api/workflow_templates").get(pack, []):
        served = host_server.get_json(f"/api/workflow_templates/{pack}/{name}.json")
        assert "nodes" in served and "links" in served, f"{name}.json is not a UI-format workflow"


# --- It runs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin_models(host_server, tmp_path_factory):
    written = standins.write_standin_models(tmp_path_factory.mktemp("standins"))
    return {role: host_server.add_model(path.parent.name, path) for role, path in written.items()}


def test_ui_workflow_runs_on_the_host(host_server, object_info, standin_models, host_clip_g):
    ui_workflow = load(UI_WORKFLOW)
    prompt = formats.ui_to_api(ui_workflow, object_info)
    prompt["5"]["inputs"]["clip_name"] = host_clip_g
    prompt["8"]["inputs"].update(width=256, height=256)
    prompt["9"]["inputs"]["steps"] = 2
    prompt["10"]["inputs"]["steps"] = 2
    # As the editor queues it: the UI graph rides along and SaveImage embeds it in the PNG.
    result = host_server.run_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": copy.deepcopy(ui_workflow)}})
    assert result.error is None, f"the prompt failed: {result.error}"
    images = host_server.output_images(result)
    assert len(images) == 1 and images[0].format == "PNG" and images[0].size == (256, 256)
    assert json.loads(images[0].info["workflow"]) == ui_workflow
    assert without_meta(json.loads(images[0].info["prompt"])) == without_meta(prompt)



def test_the_template_thumbnail_is_served_as_jpeg(host_server):
    """The template browser asks for /api/workflow_templates/<pack>/<name>.jpg (a picture of the graph,
    made by scripts/screenshot_editor.py in the host's own editor)."""
    status, body = host_server.request("GET", f"/api/workflow_templates/{host_server.pack_link.name}/text_to_image.jpg",
                                       raw=True)
    assert status == 200 and body[:3] == b"\xff\xd8\xff"
