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
from devtools.template_standins import install_template_standins  # noqa: E402
from devtools.editor_browser import open_editor, prepare_settings  # noqa: E402
from devtools.host_server import HostServer  # noqa: E402
from devtools.ui_workflows import build_all  # noqa: E402


def main(names):
    with tempfile.TemporaryDirectory() as scratch:
        server = HostServer(Path(scratch) / "base")
        # Stand-ins under the released names, so the loaders find what the templates name.
        install_template_standins(server, Path(scratch))
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
