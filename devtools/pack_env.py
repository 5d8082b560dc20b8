"""Where the pinned host environment lives, and how scripts, tests and benchmarks import the pack.

The repository root is the pack (users clone it into custom_nodes/), so its folder name is no
package name to rely on: like the host, we import it by file path, under a fixed name.
"""
import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = Path(os.environ.get("SC_ENV_DIR", Path.home() / ".cache" / "stable-cascade-comfyui"))
HOST_DIR = Path(os.environ.get("SC_HOST_DIR", ENV_DIR / "comfyui"))
# The environment's python (venv/bin/python; venv/Scripts/python.exe on Windows).
HOST_PYTHON = Path(os.environ.get("SC_HOST_PYTHON", ENV_DIR / "venv" / (
    "Scripts/python.exe" if sys.platform == "win32" else "bin/python")))
PACK_NAME = "stable_cascade_pack"


def register_pack():
    """The pack as the module `stable_cascade_pack` (imported once)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def import_host():
    """Make the pinned host importable in this process, CPU only (no GPU here or in CI)."""
    if not (HOST_DIR / "comfy").is_dir():
        raise RuntimeError(f"host not found at {HOST_DIR}: run `bash scripts/setup_env.sh` first")
    if str(HOST_DIR) not in sys.path:
        sys.path.insert(0, str(HOST_DIR))
    from comfy.cli_args import args

    args.cpu = True  # must precede the first import of comfy.model_management
    import comfy.model_management  # noqa: F401
    pin_host_nodes_module()


def pin_host_nodes_module():
    """Import the host's nodes.py as `nodes` now. The repository root is on sys.path too (for
    `devtools`), and the pack's own folder there is also called `nodes`: whichever path comes first
    when `import nodes` first runs would win, and a later sys.path change must not decide it."""
    loaded = sys.modules.get("nodes")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent != HOST_DIR:
        raise RuntimeError(f"`nodes` was imported from {loaded.__file__}, not the host's {HOST_DIR / 'nodes.py'}: "
                           "import the host (devtools.pack_env.import_host) before anything imports `nodes`")
    import nodes  # noqa: F401
