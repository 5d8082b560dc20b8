"""(Re)make every template the host's template browser shows, with the host's own editor.

For each API-format workflow `example_workflows/api/<name>_api.json` (what the host tests queue),
the editor itself (comfyui-frontend-package, in headless Chromium) loads it with `loadApiJson`, the
graph is laid out (columns by depth; samplers and image nodes sized so previews have room), loader
nodes get the official file's name, download page and model folder in `properties.models` (the
editor then warns about a missing file when the template opens), and `graph.serialize()` is saved
as `example_workflows/<name>.json`, beside a thumbnail `<name>.jpg`. The editor's own rules make
the UI format: nothing here re-implements them. tests/test_editor_browser.py checks the result
the other way (`graphToPrompt()` of each UI file equals its API twin).

    "$(bash scripts/setup_env.sh --print-python)" scripts/make_ui_workflows.py [name ...]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS.parent
EXAMPLES = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES / "api"
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(SCRIPTS))

HF = "https://huggingface.co/stabilityai/stable-cascade/resolve/main/"
# The released files a template may name: {file name: (model folder, download URL)}.
OFFICIAL_MODELS = {
    **{f"{name}.safetensors": ("diffusion_models", f"{HF}{name}.safetensors") for name in (
        "stage_c", "stage_c_bf16", "stage_c_lite", "stage_c_lite_bf16",
        "stage_b", "stage_b_bf16", "stage_b_lite", "stage_b_lite_bf16")},
    **{f"{name}.safetensors": ("vae", f"{HF}{name}.safetensors") for name in ("stage_a", "effnet_encoder", "previewer")},
    **{f"{name}.safetensors": ("controlnet", f"{HF}controlnet/{name}.safetensors") for name in (
        "canny", "inpainting", "super_resolution")},
    # The CLIP-G text encoder is published as text_encoder/model.safetensors; ComfyUI's guides rename it.
    "stable_cascade_clip_g.safetensors": ("text_encoders", f"{HF}text_encoder/model.safetensors"),
    "stable_cascade_stage_c.safetensors": ("checkpoints", f"{HF}comfyui_checkpoints/stable_cascade_stage_c.safetensors"),
    "stable_cascade_stage_b.safetensors": ("checkpoints", f"{HF}comfyui_checkpoints/stable_cascade_stage_b.safetensors"),
}

# In the page: lay the loaded graph out, give samplers and image nodes room, name the models, save.
BUILD_JS = """async ([api, name, models]) => {
  const app = window.app;
  await app.loadApiJson(api, name);
  await new Promise(resolve => setTimeout(resolve, 2500));  // the pack's info lines (file kinds, sizes) arrive
  const graph = app.graph;
  const nodes = [...graph._nodes].sort((a, b) => a.id - b.id);
  const origins = (node) => (node.inputs ?? []).filter(i => i.link != null).map(i => graph.links[i.link] ?? graph.links.get?.(i.link)).filter(Boolean).map(l => graph.getNodeById(l.origin_id));
  const depth = new Map();
  const depthOf = (node) => {
    if (!depth.has(node.id)) { depth.set(node.id, 0); depth.set(node.id, Math.max(-1, ...origins(node).map(depthOf)) + 1); }
    return depth.get(node.id);
  };
  const columns = [];
  for (const node of nodes) (columns[depthOf(node)] ??= []).push(node);
  let x = 0;
  for (const column of columns.filter(Boolean)) {
    let y = 0, width = 0;
    for (const node of column) {
      for (const widget of node.widgets ?? []) if (widget.name === 'control_after_generate') widget.value = 'fixed';
      const size = node.computeSize();
      size[0] = Math.max(size[0], 300);
      const type = node.comfyClass ?? node.type;
      if (/Sampler/.test(type)) { size[0] = Math.max(size[0], 340); size[1] += size[0]; }  // the live preview below the widgets
      if (/^(SaveImage|PreviewImage)$/.test(type)) { size[0] = 400; size[1] = 440; }
      if (type === 'CLIPTextEncode') { size[0] = 400; size[1] = 180; }
      node.setSize(size);
      node.pos = [x, y];
      y += size[1] + 80;  // the next node's title bar sits above its pos
      width = Math.max(width, size[0]);
      const title = (node.title ?? '').toLowerCase();
      if (title.includes('negative')) { node.color = '#322'; node.bgcolor = '#533'; }
      else if (title.includes('positive')) { node.color = '#232'; node.bgcolor = '#353'; }
      const named = (node.widgets ?? []).map(w => w.value).filter(v => typeof v === 'string' && models[v]);
      if (named.length) node.properties.models = named.map(v => ({ name: v, url: models[v][1], directory: models[v][0] }));
    }
    x += width + 80;
  }
  // The view the template opens with: the whole graph in a 1600x900 window.
  const height = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
  const scale = Math.min(1, 1500 / x, 780 / height);
  app.canvas.ds.scale = Math.round(scale * 100) / 100;
  app.canvas.ds.offset = [60, 60];
  graph.setDirtyCanvas(true, true);
  return JSON.parse(JSON.stringify(graph.serialize()));  // as a saved file: no undefined fields
}"""


def api_workflows(names=()):
    found = sorted(API_DIR.glob("*_api.json"))
    return [p for p in found if not names or p.name.removesuffix("_api.json") in names]


def build_all(editor, names=(), thumbnails=True):
    """{name: UI workflow} for every API workflow, written to example_workflows/."""
    from PIL import Image

    made = {}
    for api_path in api_workflows(names):
        name = api_path.name.removesuffix("_api.json")
        api = json.loads(api_path.read_text())
        models = {file: list(where) for file, where in OFFICIAL_MODELS.items()}
        ui = editor.evaluate(BUILD_JS, [api, name, models])
        (EXAMPLES / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        made[name] = ui
        if thumbnails:
            editor.load_workflow(ui)
            editor.fit_view()
            time.sleep(1.0)
            shot = Path(tempfile.mkdtemp()) / f"{name}.png"
            editor.page.screenshot(path=str(shot), clip=editor.graph_rect())
            Image.open(shot).convert("RGB").save(EXAMPLES / f"{name}.jpg", quality=80)
        print(f"wrote example_workflows/{name}.json ({len(ui['nodes'])} nodes, {len(ui['links'])} links)")
    return made


def main(names):
    from editor_browser import open_editor, prepare_settings
    from host_server import HostServer

    import standin_clip_g
    import standin_models

    with tempfile.TemporaryDirectory() as scratch:
        server = HostServer(Path(scratch) / "base")
        # Stand-ins under the released names, so the loaders find what the templates name.
        for path in standin_models.write_standin_models(Path(scratch) / "models").values():
            server.add_model(path.parent.name, path)
        server.add_model("text_encoders", standin_clip_g.standin_clip_g_path(), name="stable_cascade_clip_g.safetensors")
        server.start()
        try:
            prepare_settings(server)
            with open_editor(server.url, server.pack_link.name) as editor:
                build_all(editor, names)
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
