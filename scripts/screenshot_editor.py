"""Screenshot of the bundled text-to-image workflow in the host's own editor (for the README and
the template browser's thumbnail, example_workflows/text_to_image.jpg).

Needs Debian's Chromium and Playwright, which the test environment does not install:
    apt-get install chromium && "$(bash scripts/setup_env.sh --print-python)" -m pip install playwright
    "$(bash scripts/setup_env.sh --print-python)" scripts/screenshot_editor.py [out.png]
"""
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
from devtools import standin_clip_g, standin_models  # noqa: E402
from devtools.host_server import HostServer  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def main(out_png):
    from playwright.sync_api import sync_playwright
    from PIL import Image

    workflow = json.loads((REPO_ROOT / "example_workflows" / "text_to_image.json").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        server = HostServer(Path(scratch) / "base")
        # The file names the workflow asks for, so the loaders show them as found.
        paths = standin_models.write_standin_models(Path(scratch) / "models", roles=("stage_c", "stage_b", "stage_a", "previewer"))
        for path in paths.values():
            server.add_model(path.parent.name, path)
        server.add_model("text_encoders", standin_clip_g.standin_clip_g_path(), name="stable_cascade_clip_g.safetensors")
        server.start()
        try:
            server.request("POST", "/settings/Comfy.TutorialCompleted", True)  # no first-run template dialog
            server.request("POST", "/settings/Comfy.Minimap.Visible", False)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.goto(server.url)
                page.wait_for_function("window.app && window.app.graph", timeout=120_000)
                time.sleep(2)
                page.keyboard.press("Escape")
                page.evaluate("wf => window.app.loadGraphData(wf)", workflow)
                page.mouse.click(800, 850)  # focus the canvas (empty space), then '.' fits the view to the graph
                page.keyboard.press(".")
                time.sleep(2)
                page.screenshot(path=out_png, clip={"x": 190, "y": 145, "width": 1220, "height": 615})  # the graph only
                browser.close()
        finally:
            server.stop()
    Image.open(out_png).convert("RGB").save(REPO_ROOT / "example_workflows" / "text_to_image.jpg", quality=85)
    print(f"wrote {out_png} and example_workflows/text_to_image.jpg")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(REPO_ROOT / "out" / "editor.png"))
