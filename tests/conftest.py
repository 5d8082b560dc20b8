"""Shared test setup: where things are, and how the pack and the host are imported.

The repository root is the pack (users clone it into custom_nodes/), so its folder name is not a
valid package name we can rely on. Tests import it under a fixed name, `stable_cascade_pack`,
exactly the way the host does: by file path.
"""
import json
import os
import sys

import pytest
import torch

from devtools import standin_clip_g, standin_models
from devtools.host_server import HostError, HostServer
from devtools.pack_env import HOST_DIR, PACK_NAME, REPO_ROOT, import_host, register_pack

SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURES_DIR = SHARED_DIR / "fixtures"
REFERENCE_DIR = SHARED_DIR / "reference"

register_pack()


def seeded_random(model, seed, std=0.1):
    """Every floating-point tensor of `model` refilled from N(0, std²) with its own generator (also the
    ones a real init leaves at zero, so that no path is trivially identity); returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)
    return model.eval()


@pytest.fixture(scope="session")
def host_modules():
    """The host's own modules (`comfy.*`, `folder_paths`, ...), imported in-process on CPU."""
    import_host()
    return HOST_DIR


def pytest_generate_tests(metafunc):
    """Parameters the golden set lists, whatever the set: `gdf_case_name` (gdf/index.json) and
    `scalars_shift` (the shifts of gdf/scalars.json)."""
    if "gdf_case_name" in metafunc.fixturenames:
        cases = list(json.loads((FIXTURES_DIR / "gdf" / "index.json").read_text()))
        metafunc.parametrize("gdf_case_name", cases, scope="module")
    if "scalars_shift" in metafunc.fixturenames:
        shifts = json.loads((FIXTURES_DIR / "gdf" / "scalars.json").read_text())["shifts"]
        metafunc.parametrize("scalars_shift", shifts, ids=[f"shift{s:g}" for s in shifts])


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES_DIR.is_dir():
        raise RuntimeError(f"golden fixtures missing: expected {FIXTURES_DIR} (../shared/fixtures)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def reference_dir():
    return REFERENCE_DIR


# --- The real host as a server (one per test session) and the stand-in model files ----------------
HOST_START_TIMEOUT = float(os.environ.get("SC_HOST_START_TIMEOUT", "600"))


def pytest_collection_modifyitems(config, items):
    """Tests that use the server are marked `host`, so `-m "not host"` runs the rest alone."""
    for item in items:
        if "host_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.host)


@pytest.fixture(scope="session")
def host_server(tmp_path_factory):
    """The real host running with this pack in custom_nodes/ (a HostServer, see devtools/host_server.py).

    Started once per session in a fresh base directory with empty model folders; the test fails
    with the log tail if the server cannot start or the pack does not import. Stopped at the end,
    whatever happened.
    """
    server = HostServer(tmp_path_factory.mktemp("host"))
    failure = None
    try:
        server.start(timeout=HOST_START_TIMEOUT)
    except HostError as exc:
        failure = str(exc)
    if failure:  # outside the except block: no chained "during handling" noise in the report
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def host_client(host_server):
    """A websocket client of the session's server with its own client_id (closed afterwards)."""
    with host_server.client() as client:
        yield client


@pytest.fixture(scope="session")
def clip_g_standin_path():
    """Path of the seeded random CLIP-G text encoder (made once per machine, ~1.4 GB)."""
    return standin_clip_g.standin_clip_g_path()


@pytest.fixture(scope="session")
def host_clip_g(host_server, clip_g_standin_path):
    """The stand-in CLIP-G placed in the server's text_encoders folder; the name for CLIPLoader."""
    return host_server.add_model("text_encoders", clip_g_standin_path)


@pytest.fixture(scope="session")
def pack_node_classes(host_modules):
    """The pack's node classes, from its own entry point, exactly as the host asks for them."""
    import asyncio

    pack = sys.modules[PACK_NAME]

    async def node_list():
        extension = await pack.comfy_entrypoint()
        return await extension.get_node_list()

    return asyncio.run(node_list())


# --- The bundled text-to-image workflow on tiny stand-in models (host tests) ---------------------
TEXT_TO_IMAGE_WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "text_to_image_api.json"


@pytest.fixture(scope="session")
def standin_names(host_server, tmp_path_factory):
    """The stand-in Stage C/B/A, encoder and Previewer in the server's model folders."""
    written = standin_models.write_standin_models(tmp_path_factory.mktemp("standins"))
    names = {}
    for role, path in written.items():
        names[role] = host_server.add_model(path.parent.name, path)
    return names


@pytest.fixture
def workflow(standin_names, host_clip_g):
    """The bundled API workflow (node ids as in the file: 9 Stage C sampler, 10 Stage B sampler,
    8 latents), made small enough for a CPU: 256x256, few steps."""
    prompt = json.loads(TEXT_TO_IMAGE_WORKFLOW.read_text())
    prompt["5"]["inputs"]["clip_name"] = host_clip_g
    prompt["8"]["inputs"].update(width=256, height=256, batch_size=1)
    prompt["9"]["inputs"]["steps"] = 3
    prompt["10"]["inputs"]["steps"] = 2
    return prompt
