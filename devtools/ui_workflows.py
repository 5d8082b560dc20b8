"""Templates for the host's template browser, made by the host's own editor from API-format workflows.

For each `example_workflows/api/<name>_api.json`, the editor (comfyui-frontend-package, in headless
Chromium) loads it with `loadApiJson`; the graph is laid out (columns by depth; samplers and image
nodes sized so previews have room); loader nodes get the official file's name, download page and
model folder in `properties.models` (the editor then warns about a missing file when the template
opens); and `graph.serialize()` is saved as `example_workflows/<name>.json`, beside a thumbnail
`<name>.jpg`. The editor's own rules make the UI format: nothing here re-implements them.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .pack_env import REPO_ROOT

EXAMPLES = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES / "api"

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
    # Image variation: OpenAI's CLIP ViT-L/14 (the image encoder Stable Cascade was trained with).
    "clip_vit_large_patch14.safetensors": ("clip_vision", "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors"),
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
