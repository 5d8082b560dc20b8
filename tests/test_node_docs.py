"""Node help pages (web/docs/<NodeId>.md): one per node, in step with the code, served where the
frontend looks for them.

Where the frontend looks (comfyui-frontend-package 1.32.9, NodeHelpService.fetchCustomNodeHelp in
static/assets/index-*.js): for a node whose `python_module` is `custom_nodes.<folder>` it fetches
`/extensions/<folder>/docs/<NodeId>/<locale>.md`, and when that fails
`/extensions/<folder>/docs/<NodeId>.md`; if both fail it shows the node's description. The pack's
route (nodes/web_routes.py) answers the locale path with the one page, so the console shows no 404. The host
(server.py) serves WEB_DIRECTORY at `/extensions/<folder>/` as static files, .md included.
"""
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

DOCS_DIR = Path(__file__).resolve().parents[1] / "web" / "docs"
# One list item per input or output, narrow enough for the help panel (306 px wide in 1.32.9):
#   - **`width`** · INT, default `1024`: Width of the final image ...
ITEM = re.compile(r"^- \*\*`([^`]+)`\*\*(.*)$")
DEFAULT = re.compile(r"default `([^`]*)`")


def _page(node_id):
    return DOCS_DIR / f"{node_id}.md"


def _rows(text, section):
    """{name: the rest of its line} for the list items under `## <section>` that start with a **`name`**."""
    rows, inside = {}, False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip() == section
            continue
        match = ITEM.match(line)
        if inside and match:
            rows.setdefault(match.group(1), match.group(2))
    return rows


def _schemas(pack_node_classes):
    return [cls.GET_SCHEMA() for cls in pack_node_classes]


def test_every_node_has_a_page_and_no_page_is_orphaned(pack_node_classes):
    ids = {schema.node_id for schema in _schemas(pack_node_classes)}
    missing = sorted(i for i in ids if not _page(i).is_file())
    orphaned = sorted(p.stem for p in DOCS_DIR.glob("*.md") if p.stem not in ids)
    assert not missing, f"nodes without a help page in web/docs/: {missing}"
    assert not orphaned, f"help pages for nodes the extension does not list (renamed?): {orphaned}"


def test_every_input_and_output_is_on_its_page_with_its_default(pack_node_classes):
    problems = []
    for schema in _schemas(pack_node_classes):
        page = _page(schema.node_id)
        if not page.is_file():
            continue  # reported by the test above
        text = page.read_text(encoding="utf-8")
        inputs, outputs = _rows(text, "Inputs"), _rows(text, "Outputs")
        for node_input in schema.inputs:
            row = inputs.get(node_input.id)
            if row is None:
                problems.append(f"{schema.node_id}: input `{node_input.id}` has no row under ## Inputs")
                continue
            default = getattr(node_input, "default", None)
            shown = DEFAULT.search(row)
            shown = shown.group(1) if shown else None
            if default is not None and shown != str(default):
                problems.append(
                    f"{schema.node_id}: input `{node_input.id}` defaults to {default!r} in the code, the page says {shown!r}"
                )
        for output in schema.outputs:
            if output.display_name not in outputs:
                problems.append(f"{schema.node_id}: output `{output.display_name}` has no row under ## Outputs")
        if any(line.startswith("|") and line.count("|") > 3 for line in text.splitlines()):
            problems.append(f"{schema.node_id}: a table of more than two columns does not fit the 306 px help panel")
        if len(text.splitlines()) > 80:
            problems.append(f"{schema.node_id}: page has {len(text.splitlines())} lines; keep it short")
    assert not problems, "\n".join(problems)


def test_the_frontend_still_fetches_docs_where_the_pages_are():
    """The installed frontend bundle builds the URLs this layout relies on."""
    import comfyui_frontend_package as frontend
    bundles = [p for p in (Path(frontend.__file__).parent / "static" / "assets").glob("index-*.js")
               if "fetchCustomNodeHelp" in p.read_text(encoding="utf-8", errors="replace")]
    assert bundles, "no frontend bundle defines fetchCustomNodeHelp: the help panel changed, re-check web/docs"
    code = bundles[0].read_text(encoding="utf-8", errors="replace")
    assert re.search(r"/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}\.md`", code), \
        "the frontend no longer fetches /extensions/<pack>/docs/<NodeId>.md"
    assert re.search(r"/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}/\$\{\w+\}\.md`", code), \
        "the frontend no longer asks for /extensions/<pack>/docs/<NodeId>/<locale>.md first (nodes/web_routes.py serves it)"


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def fetch_help_as_the_frontend_does(server_url, node_info, locale="en"):
    """NodeHelpService.fetchCustomNodeHelp: the locale page first, then the plain page."""
    module = node_info["python_module"]
    parts = module.split(".")
    assert len(parts) >= 2 and parts[0] == "custom_nodes", f"python_module {module!r} is not a custom node's"
    pack = parts[1].split("@")[0]  # normalizePackId
    base = f"{server_url}/extensions/{urllib.parse.quote(pack)}/docs/{urllib.parse.quote(node_info['name'])}"
    tried = []
    for url in (f"{base}/{locale}.md", f"{base}.md"):
        status, content_type, body = _get(url)
        tried.append((url, status))
        if status == 200:
            return url, content_type, body, tried
    return None, None, None, tried


def test_the_host_serves_every_page_at_the_url_the_frontend_fetches(host_server, pack_node_classes):
    problems = []
    for schema in _schemas(pack_node_classes):
        info = host_server.object_info(schema.node_id)
        # The Content-Type is whatever mimetypes knows for .md (application/octet-stream on a bare
        # Debian): the frontend reads the body with response.text(), which ignores it.
        url, _content_type, body, tried = fetch_help_as_the_frontend_does(host_server.url, info)
        if url is None:
            problems.append(f"{schema.node_id}: no page at {tried}")
            continue
        # The locale page comes first (no 404 in the browser console), and it is the same page.
        assert url.endswith(f"/docs/{schema.node_id}/en.md"), url
        if body != _page(schema.node_id).read_bytes():
            problems.append(f"{schema.node_id}: {url} does not answer with web/docs/{schema.node_id}.md")
    assert not problems, "\n".join(problems)
