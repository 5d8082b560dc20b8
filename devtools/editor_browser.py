"""The host's own editor (comfyui-frontend-package) in headless Chromium, driven by Playwright.

Plain Python (no pytest): tests and scripts/make_ui_workflows.py use it.
Chromium is Debian's package, never a Playwright download (GUIDE §6):

    with open_editor(server_url) as editor:
        editor.load_workflow(ui_json)
        editor.page.screenshot(path=...)
        assert not editor.pack_console_errors()
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
PACK_NODE_PREFIX = "SCPack_"
# Offline, the editor asks the node registry about every custom node it sees (and fails to reach it).
OFFLINE_REGISTRY = "https://api.comfy.org/"
VIEWPORT = {"width": 1600, "height": 900}

# The frontend's Pinia stores (node definitions and their search service, dialogs, settings), reached
# the way Vue devtools does: through the app mounted on #vue-app.
STORE_JS = """(name) => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  return pinia._s.get(name);
}"""


@dataclass
class Editor:
    page: object
    pack_folder: str
    console: list = field(default_factory=list)  # (type, text, url)
    failed_requests: list = field(default_factory=list)  # (url, status)

    def evaluate(self, script, arg=None):
        return self.page.evaluate(script, arg)

    def store(self, name, expression):
        """Evaluate `expression` (a JS expression using `store`) on the frontend's Pinia store `name`."""
        return self.page.evaluate(f"([name]) => {{ const store = ({STORE_JS})(name); return {expression}; }}", [name])

    def load_workflow(self, workflow, settle=1.5):
        self.page.evaluate("wf => window.app.loadGraphData(wf)", workflow)
        time.sleep(settle)

    def fit_view(self):
        self.page.evaluate("() => { window.app.canvas.ds.reset?.(); window.app.canvas.fitViewToSelectionAnimated?.() }")
        self.page.mouse.click(VIEWPORT["width"] // 2, VIEWPORT["height"] - 40)
        self.page.keyboard.press(".")
        time.sleep(1.0)

    def focus_node(self, node_id, scale=1.0):
        """Centre the canvas on a node at this zoom; returns the page rectangle around it for a screenshot."""
        return self.page.evaluate("""([id, scale]) => {
            const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
            const rect = canvas.canvas.getBoundingClientRect();
            canvas.ds.scale = scale;
            canvas.ds.offset = [rect.width / 2 / scale - (node.pos[0] + node.size[0] / 2),
                                rect.height / 2 / scale - (node.pos[1] + node.size[1] / 2)];
            canvas.setDirty(true, true);
            const w = Math.min(rect.width, (node.size[0] + 400) * scale), h = Math.min(rect.height - 80, (node.size[1] + 160) * scale);
            return {x: rect.left + rect.width / 2 - w / 2, y: rect.top + rect.height / 2 - h / 2, width: w, height: h};
        }""", [node_id, scale])

    def graph_rect(self, margin=20):
        """The page rectangle the graph's nodes (titles included) cover now, for a screenshot."""
        return self.page.evaluate("""(margin) => {
            const canvas = window.app.canvas, ds = canvas.ds, rect = canvas.canvas.getBoundingClientRect();
            const nodes = window.app.graph._nodes;
            const left = Math.min(...nodes.map(n => n.pos[0])), top = Math.min(...nodes.map(n => n.pos[1] - 30));
            const right = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), bottom = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
            const x = Math.max(rect.left, rect.left + (left + ds.offset[0]) * ds.scale - margin);
            const y = Math.max(rect.top, rect.top + (top + ds.offset[1]) * ds.scale - margin);
            return {x, y, width: Math.min(rect.right, rect.left + (right + ds.offset[0]) * ds.scale + margin) - x,
                    height: Math.min(rect.bottom, rect.top + (bottom + ds.offset[1]) * ds.scale + margin) - y};
        }""", margin)

    def nodes(self):
        """[{id, type, title, pos, size, widgets: {name: value}, info: [{text, wrong}]}] of the graph."""
        return self.page.evaluate("""() => window.app.graph._nodes.map(n => ({
            id: n.id, type: n.comfyClass ?? n.type, title: n.title, pos: [...n.pos], size: [...n.size],
            widgets: Object.fromEntries((n.widgets ?? []).filter(w => w.name !== 'sc_info').map(w => [w.name, w.value])),
            info: (n.widgets ?? []).find(w => w.name === 'sc_info')?.value ?? null }))""")

    def node(self, node_type):
        matches = [n for n in self.nodes() if n["type"] == node_type]
        assert matches, f"no {node_type} node in the graph"
        return matches[0]

    def set_widget(self, node_id, name, value):
        """Set a widget as a user does (value, then its callback, which extensions hook)."""
        self.page.evaluate("""([id, name, value]) => {
            const node = window.app.graph.getNodeById(id);
            const widget = node.widgets.find(w => w.name === name);
            widget.value = value;
            widget.callback?.(value, window.app.canvas, node);
            node.setDirtyCanvas(true, true);
        }""", [node_id, name, value])

    def pack_console_errors(self):
        """Errors and failed requests that come from this pack (URLs under its extension folder,
        its routes, or messages naming its nodes); the offline editor's own noise is left out."""
        marks = (f"/extensions/{self.pack_folder}/", "/stable_cascade/", PACK_NODE_PREFIX, "[stable cascade]")
        errors = [f"console {kind}: {text} ({url})" for kind, text, url in self.console
                  if kind in ("error", "pageerror") and not (url or "").startswith(OFFLINE_REGISTRY)
                  and any(m in text or m in (url or "") for m in marks)]
        errors += [f"HTTP {status}: {url}" for url, status in self.failed_requests if any(m in url for m in marks)]
        return errors


def _ready(page, timeout_ms):
    page.wait_for_function("window.app && window.app.graph && window.app.canvas && document.querySelector('#vue-app')",
                           timeout=timeout_ms)


@contextlib.contextmanager
def launch_browser():
    """Debian's headless Chromium under Playwright (one per process: Playwright's sync API does not nest)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_editor(server_url, pack_folder, *, browser=None, timeout_ms=180_000, viewport=VIEWPORT):
    """The editor at `server_url`, loaded and ready, in a new page of `browser` (or of its own browser)."""
    if browser is None:
        with launch_browser() as own, open_editor(server_url, pack_folder, browser=own, timeout_ms=timeout_ms,
                                                  viewport=viewport) as editor:
            yield editor
        return
    page = browser.new_page(viewport=viewport)
    try:
        editor = Editor(page, pack_folder)
        page.on("console", lambda m: editor.console.append((m.type, m.text, (m.location or {}).get("url"))))
        page.on("pageerror", lambda e: editor.console.append(("pageerror", str(e), "")))
        page.on("response", lambda r: editor.failed_requests.append((r.url, r.status)) if r.status >= 400 else None)
        page.goto(server_url)
        _ready(page, timeout_ms)
        time.sleep(1.0)
        page.keyboard.press("Escape")  # any first-run dialog
        yield editor
    finally:
        page.close()


def prepare_settings(server):
    """Settings for a quiet editor: no tutorial template dialog, no minimap over the graph."""
    server.request("POST", "/settings/Comfy.TutorialCompleted", True)
    server.request("POST", "/settings/Comfy.Minimap.Visible", False)
    # Text stays drawn on zoomed-out overviews (screenshots, template thumbnails).
    server.request("POST", "/settings/LiteGraph.Canvas.MinFontSizeForLOD", 1)
