"""The pack in the host's own editor (comfyui-frontend-package 1.32.9), in headless Chromium.

One host with tiny stand-in models under the released file names (and a stand-in CLIP-G), one
browser page for the module. Every node and every template is covered from what the host and the
example_workflows folder list, so new nodes and workflows are tested without editing this file.
Screenshots go to artifacts/editor/ (the README shows them).
"""
import json
import re
import time

import pytest
from conftest import REPO_ROOT

from devtools import standin_clip_vision, standin_models, ui_workflows
from devtools.editor_browser import launch_browser, open_editor, prepare_settings

EXAMPLES = REPO_ROOT / "example_workflows"
ARTIFACTS = REPO_ROOT / "artifacts" / "editor"
TEMPLATE_NAMES = sorted(p.name.removesuffix("_api.json") for p in (EXAMPLES / "api").glob("*_api.json"))
CLIP_G_NAME = "stable_cascade_clip_g.safetensors"  # the name the templates use
HELP_PANEL_WIDTH = 306  # the node library sidebar of 1.32.9, where help pages show


def shot(editor, name, node_id=None, clip=None):
    """A screenshot in artifacts/editor/: the page (or `clip` of it), or the part around one node at full zoom."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if node_id is not None:
        clip = editor.focus_node(node_id)
        time.sleep(0.8)
    editor.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), clip=clip)


def template(name):
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def api_twin(name):
    return json.loads((EXAMPLES / "api" / f"{name}_api.json").read_text())


@pytest.fixture(scope="module")
def standin_paths(tmp_path_factory):
    return standin_models.write_standin_models(tmp_path_factory.mktemp("editor_standins"))


@pytest.fixture(scope="module")
def standins(host_server, clip_g_standin_path, standin_paths):
    """{role: file name} of the stand-ins placed in the server's model folders."""
    host_server.add_model("text_encoders", clip_g_standin_path, name=CLIP_G_NAME)
    host_server.add_model("clip_vision", standin_clip_vision.standin_clip_vision_path(), name="clip_vit_large_patch14.safetensors")
    return {role: host_server.add_model(path.parent.name, path) for role, path in standin_paths.items()}


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def editor(host_server, standins, browser):
    prepare_settings(host_server)
    with open_editor(host_server.url, host_server.pack_link.name, browser=browser) as opened:
        yield opened


@pytest.fixture(autouse=True)
def no_pack_errors_in_the_console(request):
    """After each test that used the browser: nothing from the pack in the console, no failed pack request."""
    yield
    if "editor" in request.fixturenames:
        opened = request.getfixturevalue("editor")
        errors = opened.pack_console_errors()
        opened.console.clear()
        opened.failed_requests.clear()
        assert not errors, "\n".join(errors)


def open_dialogs(editor):
    return editor.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(d => d.innerText)")


def close_dialogs(editor):
    for _ in range(3):
        if not open_dialogs(editor):
            return
        editor.page.keyboard.press("Escape")
        time.sleep(0.3)


# --- Finding the nodes ------------------------------------------------------------------------

def search(editor, query):
    return editor.store("nodeDef", f"store.nodeSearchService.searchNode({json.dumps(query)}).map(d => d.name)")


def test_search_finds_every_pack_node_by_the_models_name(editor, host_server):
    pack_nodes = set(host_server.pack_nodes())
    assert pack_nodes
    for query in ("cascade", "stable cascade", "Stable Cascade"):
        missing = pack_nodes - set(search(editor, query))
        assert not missing, f"searching {query!r} does not find {sorted(missing)}"
    # As a user sees it: double-click the empty canvas, type.
    editor.evaluate("() => window.app.graph.clear()")
    editor.page.mouse.dblclick(900, 500)
    editor.page.wait_for_selector(".comfy-vue-node-search-container input, .p-autocomplete-input", timeout=10_000)
    editor.page.keyboard.type("cascade")
    time.sleep(1.5)
    shown = editor.evaluate("() => document.querySelector('.comfy-vue-node-search-container, .p-autocomplete-overlay')?.closest('.p-dialog')?.innerText ?? document.body.innerText")
    shot(editor, "search_cascade", clip={"x": 600, "y": 200, "width": 1000, "height": 440})
    editor.page.keyboard.press("Escape")
    assert "Stage C Prior Sampler (Stable Cascade)" in shown, shown[:500]


def test_search_finds_the_stages_by_their_names(editor, host_server):
    names = {node_id: info["display_name"] for node_id, info in host_server.pack_nodes().items()}
    for stage in "ABC":
        having = {n for n, shown in names.items() if f"Stage {stage}" in shown}
        assert having, f"no node names Stage {stage}"
        missing = having - set(search(editor, f"stage {stage.lower()}"))
        assert not missing, f"'stage {stage.lower()}' does not find {sorted(missing)}"
    assert {"SCPack_StageCLoader", "SCPack_StageCSampler"} <= set(search(editor, "prior"))
    assert "SCPack_StageBLoader" in search(editor, "decoder")


# --- Templates --------------------------------------------------------------------------------

def test_every_api_workflow_has_a_template_and_the_host_lists_it(host_server):
    listed = host_server.get_json("/api/workflow_templates").get(host_server.pack_link.name, [])
    assert TEMPLATE_NAMES and sorted(listed) == TEMPLATE_NAMES, (listed, TEMPLATE_NAMES)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_opens_without_warnings_and_exports_its_api_twin(editor, name):
    editor.load_workflow(template(name))
    dialogs = open_dialogs(editor)
    close_dialogs(editor)
    assert not dialogs, f"{name} opened with a dialog: {dialogs}"
    types = editor.evaluate("() => window.app.graph._nodes.map(n => [n.type, n.has_errors === true])")
    assert all(t in editor.evaluate("() => Object.keys(LiteGraph.registered_node_types)") for t, _ in types)
    exported = editor.evaluate("async () => (await window.app.graphToPrompt()).output")
    twin = api_twin(name)
    assert {k: (v["class_type"], v["inputs"]) for k, v in exported.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in twin.items()}
    assert {k: v["_meta"]["title"] for k, v in exported.items()} == {k: v["_meta"]["title"] for k, v in twin.items()}
    editor.fit_view()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    editor.page.screenshot(path=str(ARTIFACTS / f"template_{name}.png"), clip=editor.graph_rect())


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_sampler_previews_have_room(editor, name):
    """Below a sampler's last widget there is at least its width of free height for the live preview."""
    editor.load_workflow(template(name))
    rooms = editor.evaluate("""() => window.app.graph._nodes.filter(n => /Sampler/.test(n.comfyClass ?? n.type))
        .map(n => [n.comfyClass, n.size[0], n.size[1] - n.computeSize()[1]])""")
    for node_type, width, room in rooms:
        assert room >= width, f"{name}: {node_type} has {room:.0f} px for its preview, less than its width {width:.0f}"


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_loaders_name_their_official_files_and_sources(name):
    make = ui_workflows
    for node in template(name)["nodes"]:
        chosen = {v for v in node.get("widgets_values", []) if isinstance(v, str) and v in make.OFFICIAL_MODELS}
        named = {m["name"]: m for m in node.get("properties", {}).get("models", [])}
        assert chosen <= set(named), f"{name}: node {node['id']} ({node['type']}) does not name {chosen - set(named)}"
        for file, model in named.items():
            folder, url = make.OFFICIAL_MODELS[file]
            assert model == {"name": file, "url": url, "directory": folder}
            assert url.startswith("https://huggingface.co/") and url.endswith(".safetensors")


def test_a_template_with_an_absent_model_warns_and_names_where_to_get_it(host_server, standins, standin_paths, browser):
    absent = standins["stage_b"]
    host_server.remove_model("diffusion_models", absent)
    try:
        # A fresh page: the editor's model library caches folder listings.
        with open_editor(host_server.url, host_server.pack_link.name, browser=browser) as fresh:
            fresh.load_workflow(template("text_to_image"), settle=3)
            dialogs = open_dialogs(fresh)
            shot(fresh, "missing_model_warning", clip={"x": 480, "y": 230, "width": 640, "height": 440})
    finally:
        host_server.add_model("diffusion_models", standin_paths["stage_b"])
    assert any(absent in text for text in dialogs), f"no dialog names the absent {absent}: {dialogs}"
    assert not any(standins["stage_c"] in text for text in dialogs), "a file that is there is reported missing"


# --- The empty-latent node's live sizes -------------------------------------------------------

def expected_size_lines(widgets):
    from stable_cascade_pack.nodes import latents  # noqa: PLC0415  (needs the host modules)

    compression = {k: widgets[k] for k in ("compression", "compression_number") if k in widgets}
    (c_h, c_w), (b_h, b_w) = latents.latent_sizes(widgets["width"], widgets["height"], **compression)
    return f"Stage C latent {c_w}\u00d7{c_h}", f"Stage B latent {b_w}\u00d7{b_h}", f"image {b_w * 4}\u00d7{b_h * 4}"


def test_empty_latent_shows_the_sizes_live(editor, host_modules):
    editor.load_workflow(template("text_to_image"))
    node = editor.node("SCPack_EmptyLatent")
    for width, height in ((1024, 1024), (1536, 1024), (2048, 640)):
        editor.set_widget(node["id"], "width", width)
        editor.set_widget(node["id"], "height", height)
        node = editor.node("SCPack_EmptyLatent")
        shown = [line["text"] for line in node["info"]]
        for expected in expected_size_lines(node["widgets"]):
            assert any(line.startswith(expected) for line in shown), f"{width}x{height}: {expected!r} not in {shown}"
    shot(editor, "empty_latent_sizes", node["id"])


# --- Loader file kinds ------------------------------------------------------------------------

def wait_for_info(editor, node_type, predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        node = editor.node(node_type)
        if node["info"] and predicate(node["info"]):
            return node
        if time.monotonic() > deadline:
            raise AssertionError(f"{node_type} never showed the expected info: {node['info']}")
        time.sleep(0.3)


def test_loader_shows_what_the_file_is_and_marks_a_wrong_one(editor, standins):
    editor.load_workflow(template("text_to_image"))
    node = wait_for_info(editor, "SCPack_StageALoader", lambda info: "Stage A" in info[0]["text"])
    assert not node["info"][0].get("wrong")
    editor.set_widget(node["id"], "vae_name", standins["previewer"])
    node = wait_for_info(editor, "SCPack_StageALoader", lambda info: info[0].get("wrong"))
    assert "\u2717" in node["info"][0]["text"] and "Previewer" in node["info"][0]["text"]
    labels = editor.evaluate("""(id) => { const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === 'vae_name');
        return w.options.values.map(v => w.options.getOptionLabel(v)); }""", node["id"])
    marked = [label for label in labels if "\u2717" in label]
    assert labels[0] == standins["stage_a"], f"the Stage A file should come first: {labels}"
    assert marked and all("stage_a" not in label for label in marked), labels
    shot(editor, "loader_wrong_file", node["id"])


def test_every_loader_file_input_gets_kinds_for_every_offered_file(host_server):
    inputs = host_server.get_json("/stable_cascade/file_inputs")
    assert inputs, "no loader declares its file inputs"
    for node_id, names in inputs.items():
        info = host_server.object_info(node_id)
        for name in names:
            answer = host_server.get_json(f"/stable_cascade/file_kinds?node={node_id}&input={name}")
            spec = {**info["input"]["required"], **info["input"].get("optional", {})}[name]
            offered = [v for v in spec[0] if v != "none"] if isinstance(spec[0], list) else spec[1]["options"]
            offered = [v for v in offered if v != "none"]
            assert set(answer["files"]) == set(offered), (node_id, name)
            fitting = [f for f in offered if answer["files"][f]["fits"] is True]
            assert offered[:len(fitting)] == fitting, f"{node_id}.{name}: fitting files are not listed first: {offered}"


def test_file_kinds_route_takes_no_path_and_refuses_unknown_inputs(host_server):
    status, body = host_server.request("GET", "/stable_cascade/file_kinds?node=SCPack_StageALoader&input=../../etc")
    assert status == 404 and "not a file input" in body["error"]
    # Only the host's own listing of the loader's folders is described; a name in the query is ignored.
    answer = host_server.get_json("/stable_cascade/file_kinds?node=SCPack_StageALoader&input=vae_name&name=../../../etc/passwd")
    assert "../../../etc/passwd" not in answer["files"] and answer["files"]


def test_the_editor_works_when_the_pack_routes_fail(host_server, standins, browser):
    with open_editor(host_server.url, host_server.pack_link.name, browser=browser) as broken:
        broken.page.route(re.compile(r".*/stable_cascade/.*"), lambda route: route.abort())
        broken.page.reload()
        broken.page.wait_for_function("window.app && window.app.graph", timeout=120_000)
        time.sleep(1)
        broken.load_workflow(template("text_to_image"))
        node = broken.node("SCPack_StageALoader")
        assert node["widgets"]["vae_name"] == standins["stage_a"]
        exported = broken.evaluate("async () => Object.keys((await window.app.graphToPrompt()).output).length")
        assert exported == len(api_twin("text_to_image"))
        assert not [e for e in broken.console if e[0] == "pageerror"], broken.console


# --- Help pages in the panel ------------------------------------------------------------------

def test_help_pages_fit_the_panel(editor, host_server):
    editor.page.locator(".node-library-tab-button").first.click()
    time.sleep(1)
    try:
        for node_id in sorted(host_server.pack_nodes()):
            editor.evaluate("""(id) => {
                const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
                pinia._s.get('nodeHelp').openHelp(pinia._s.get('nodeDef').nodeDefsByName[id]); }""", node_id)
            editor.page.wait_for_selector(".markdown-content h1, .markdown-content h2", timeout=10_000)
            time.sleep(0.5)
            panel_width, sticking_out, heading = editor.evaluate("""() => {
                const panel = document.querySelector('.sidebar-content-container');
                const right = panel.getBoundingClientRect().right;
                const content = document.querySelector('.markdown-content');
                return [panel.clientWidth,
                        [...content.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > right + 0.5)
                            .map(e => e.tagName + ': ' + e.textContent.slice(0, 60)),
                        content.querySelector('h1')?.textContent ?? ''];
            }""")
            assert panel_width <= HELP_PANEL_WIDTH + 1
            assert not sticking_out, f"{node_id}: wider than the help panel: {sticking_out}"
            assert heading == host_server.object_info(node_id)["display_name"], f"{node_id}: the panel shows {heading!r}"
            if node_id == "SCPack_StageCSampler":
                shot(editor, "help_panel", clip={"x": 0, "y": 40, "width": 720, "height": 760})
    finally:
        editor.page.locator(".node-library-tab-button").first.click()


# --- Queue from the editor --------------------------------------------------------------------

def test_queue_shows_progress_previews_and_the_image(editor, host_server):
    editor.load_workflow(template("text_to_image"))
    for node in editor.nodes():
        if node["type"] == "SCPack_EmptyLatent":
            editor.set_widget(node["id"], "width", 256)
            editor.set_widget(node["id"], "height", 256)
        if node["type"] in ("SCPack_StageCSampler", "SCPack_StageBSampler"):
            editor.set_widget(node["id"], "steps", 3)
            editor.set_widget(node["id"], "seed", time.time_ns() % 1_000_000)  # never a cached result
    editor.evaluate("""() => {
        window.__sc = {progress: [], previews: 0, executed: []};
        const api = window.comfyAPI.api.api;
        api.addEventListener('progress', e => window.__sc.progress.push([e.detail.node, e.detail.value, e.detail.max]));
        api.addEventListener('b_preview', () => window.__sc.previews++);
        api.addEventListener('executed', e => window.__sc.executed.push(e.detail.node));
    }""")
    log_before = len(host_server.log_text())
    editor.evaluate("() => window.app.queuePrompt(0, 1)")
    editor.page.wait_for_function("() => window.__sc.executed.length > 0", timeout=300_000)
    editor.fit_view()
    # The output image shows on the Save Image node (its image loads once the canvas draws it).
    editor.page.wait_for_function("""() => { window.app.canvas.draw(true, true);
        return window.app.graph._nodes.some(n => n.type === 'SaveImage' && n.imgs?.[0]?.naturalWidth); }""", timeout=30_000)
    events = editor.evaluate("() => window.__sc")
    shot(editor, "queued_output", editor.node("SaveImage")["id"])
    shot(editor, "stage_c_preview", editor.node("SCPack_StageCSampler")["id"])
    sampler_ids = {str(n["id"]) for n in editor.nodes() if n["type"] in ("SCPack_StageCSampler", "SCPack_StageBSampler")}
    finished = {node for node, value, maximum in events["progress"] if value == maximum == 3}
    assert sampler_ids <= finished, f"progress did not reach 3/3 on every sampler: {events['progress']}"
    assert events["previews"] >= 3, f"{events['previews']} previews for 3 Stage C steps"
    size = editor.evaluate("() => { const n = window.app.graph._nodes.find(n => n.type === 'SaveImage'); return [n.imgs[0].naturalWidth, n.imgs[0].naturalHeight]; }")
    assert size == [256, 256]
    # The terminal bar, as the host's KSampler prints it (tqdm: "100%|...| 3/3").
    assert re.search(r"100%\|[^\n\r]*\| 3/3", host_server.log_text()[log_before:]), "no terminal progress bar in the host log"
