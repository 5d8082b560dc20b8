"""The pack's two small HTTP routes on the host's server (registered once, from comfy_entrypoint).

GET /stable_cascade/file_inputs
    {node id: [file input names]} of every loader of the pack.
GET /stable_cascade/file_kinds?node=<NodeId>&input=<name>
    For each file a loader input offers: what it is (from the safetensors header only) and whether
    it holds what that input needs. The editor extension marks wrong files with it.
GET /extensions/<pack folder>/docs/<NodeId>/<locale>.md
    The help panel asks for the locale page first; every locale gets the one (English) page
    instead of a 404 in the browser console.
"""
import logging
import os
from pathlib import Path

from aiohttp import web

from .file_kinds import describe_choice

# Not resolved: the host serves the pack under the name of its folder in custom_nodes/, which may be a link.
PACK_DIR = Path(os.path.abspath(__file__)).parents[1]
DOCS_DIR = PACK_DIR / "web" / "docs"


def _file_inputs(node_classes):
    """{node id: {input: (folders, wanted kind)}} for every loader that declares its file inputs."""
    table = {}
    for cls in node_classes:
        declared = getattr(cls, "file_inputs", None)
        if declared is not None:
            table[cls.GET_SCHEMA().node_id] = declared()
    return table


def _help_page(node_ids):
    async def handler(request):
        node_id = request.match_info["node_id"]
        page = DOCS_DIR / f"{node_id}.md"
        if node_id not in node_ids or not page.is_file():
            raise web.HTTPNotFound()
        return web.Response(text=page.read_text(encoding="utf-8"), content_type="text/markdown")

    return handler


def _file_kinds(file_inputs):
    async def handler(request):
        node_id, input_name = request.query.get("node", ""), request.query.get("input", "")
        declared = file_inputs.get(node_id, {}).get(input_name)
        if declared is None:
            return web.json_response({"error": f"{node_id}.{input_name} is not a file input of this pack"}, status=404)
        folders, want = declared
        from .model_files import filenames

        choices = {name: describe_choice(name, folders, want) for name in filenames(*folders)}
        return web.json_response({"node": node_id, "input": input_name, "files": choices})

    return handler


_registered = False


def register(node_classes):
    """Add the routes to the running host's server; a host without one (tests importing the pack
    in-process) simply gets none."""
    global _registered
    if _registered:
        return
    try:
        from server import PromptServer

        routes = PromptServer.instance.routes
    except (ImportError, AttributeError):
        return
    file_inputs = _file_inputs(node_classes)
    node_ids = {cls.GET_SCHEMA().node_id for cls in node_classes}
    pack_folder = os.path.basename(PACK_DIR)
    routes.get("/stable_cascade/file_kinds")(_file_kinds(file_inputs))
    listing = {node_id: list(inputs) for node_id, inputs in file_inputs.items()}

    async def list_file_inputs(_request):
        return web.json_response(listing)

    routes.get("/stable_cascade/file_inputs")(list_file_inputs)
    routes.get(f"/extensions/{pack_folder}/docs/{{node_id}}/{{locale}}.md")(_help_page(node_ids))
    _registered = True
    logging.info(f"[stable cascade] web routes registered for {len(file_inputs)} loaders")
