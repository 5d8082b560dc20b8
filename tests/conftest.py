"""Shared test setup: where things are, and how the pack and the host are imported.

The repository root is the pack (users clone it into custom_nodes/), so its folder name is not a
valid package name we can rely on. Tests import it under a fixed name, `stable_cascade_pack`,
exactly the way the host does: by file path.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURES_DIR = SHARED_DIR / "fixtures"
REFERENCE_DIR = SHARED_DIR / "reference"
ENV_DIR = Path(os.environ.get("SC_ENV_DIR", Path.home() / ".cache" / "stable-cascade-comfyui"))
HOST_DIR = Path(os.environ.get("SC_HOST_DIR", ENV_DIR / "comfyui"))
PACK_NAME = "stable_cascade_pack"


def _register_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


_register_pack()


def import_host():
    """Make the pinned host importable in this process, CPU only (no GPU here or in CI)."""
    if not (HOST_DIR / "comfy").is_dir():
        raise RuntimeError(f"host not found at {HOST_DIR}: run `bash scripts/setup_env.sh` first")
    if str(HOST_DIR) not in sys.path:
        sys.path.insert(0, str(HOST_DIR))
    from comfy.cli_args import args

    args.cpu = True  # must precede the first import of comfy.model_management
    import comfy.model_management  # noqa: F401


@pytest.fixture(scope="session")
def host_modules():
    """The host's own modules (`comfy.*`, `folder_paths`, ...), imported in-process on CPU."""
    import_host()
    return HOST_DIR


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES_DIR.is_dir():
        raise RuntimeError(f"golden fixtures missing: expected {FIXTURES_DIR} (../shared/fixtures)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def reference_dir():
    return REFERENCE_DIR
