"""The host's two workflow formats, and conversion between them without a browser.

ComfyUI executes the API format (`{node_id: {class_type, inputs, _meta}}`), but the editor and its
template browser load the UI format (`{nodes, links, groups, ...}`, version 0.4). The UI format
keeps widget values *positionally* in `widgets_values`, so converting either way needs the node
definitions from `/object_info`. The rules below are those of the host's frontend,
comfyui-frontend-package 1.32.9 (read from its bundled JS):

- Input order is `input_order` (required, then optional). A node first gets one socket for every
  input whose type has no widget (MODEL, CONDITIONING, ...), then one widget for every input whose
  type has one (INT, FLOAT, STRING, BOOLEAN, COMBO, ...), each in that order.
- An INT widget whose spec says `control_after_generate` (or, when the spec does not say, one named
  `seed` or `noise_seed`) is followed by a "control_after_generate" combo ("fixed", "increment",
  "decrement", "randomize"). Its value is saved in `widgets_values` but never sent to the server. A
  COMBO with `control_after_generate` gets that combo and a "control_filter_list" string.
- "Export (API)" (`graphToPrompt`) writes every serialisable widget by name, then every linked
  input as `[str(origin_id), origin_slot]` (a link wins over a widget of the same name), drops
  muted/bypassed and virtual nodes, wraps literal lists as `{"__value__": [...]}`, and removes
  links from nodes that are not in the prompt. Unconnected optional sockets do not appear.
- The workflow it embeds in images lists only sockets and *linked* widget inputs in each node's
  `inputs` (`compressWidgetInputSlots`); the editor rebuilds widget inputs by name on load. We
  write that compact form: it loads the same in 1.32.9 and in older frontends.

Run as a script to (re)generate the bundled UI workflow from its API twin:

    curl -s http://127.0.0.1:8188/object_info > object_info.json     # a running host with this pack
    python -m devtools.workflow_formats --object-info object_info.json \\
        example_workflows/api/text_to_image_api.json example_workflows/text_to_image.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

FRONTEND_VERSION = "1.32.9"

# Input types the 1.32.9 frontend draws as a widget (`ComfyWidgets`); every other type is a socket.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "IMAGEUPLOAD",
                          "COLOR", "IMAGECOMPARE", "CHART", "GALLERIA", "TEXTAREA"})
SEED_NAMES = ("seed", "noise_seed")  # INT widgets that get a control combo unless the spec says no
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")

# Nodes that exist only in the editor: never sent to the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_NEVER, MODE_BYPASS = 2, 4

# LiteGraph's geometry (pixels), used to give nodes the size the editor would give them.
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
MULTILINE_HEIGHT = 110
NODE_WIDTH = 320
WIDE_NODE_WIDTH = 420
OUTPUT_NODE_SIZE = (320, 340)
COLUMN_GAP = 80
ROW_GAP = 40
GROUP_TITLE = 44
GROUP_PADDING = 16


# --- Node definitions as the frontend reads them ------------------------------------------------

@dataclass
class InputSpec:
    name: str
    type: str            # "COMBO" for a list of choices, else the declared type
    optional: bool
    options: dict = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def widget_slots(self) -> list[str]:
        """The entries this input takes in `widgets_values`: its value, then the UI-only extras."""
        if not self.is_widget:
            return []
        slots = [self.name]
        control = self.options.get("control_after_generate")
        if self.type == "INT" and (self.name in SEED_NAMES if control is None else bool(control)):
            slots.append("control_after_generate")
        elif self.type == "COMBO" and control:
            slots += ["control_after_generate", "control_filter_list"]
        if self.type == "COMBO" and self.options.get("image_upload"):
            slots.append("upload")
        return slots


def input_specs(node_info: dict) -> list[InputSpec]:
    """A node's inputs in the frontend's order (`getOrderedInputSpecs`); hidden inputs excluded."""
    declared = node_info.get("input", {})
    specs: dict[str, InputSpec] = {}
    for section in ("required", "optional"):
        for name, spec in (declared.get(section) or {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs[name] = InputSpec(name, "COMBO" if isinstance(kind, list) else str(kind),
                                    section == "optional", options)
    order = node_info.get("input_order")
    if not order:
        return list(specs.values())
    ordered = [specs[n] for n in order.get("required", []) if n in specs and not specs[n].optional]
    ordered += [specs[n] for n in order.get("optional", []) if n in specs and specs[n].optional]
    return ordered + [s for s in specs.values() if s not in ordered]


def socket_specs(node_info: dict) -> list[InputSpec]:
    return [s for s in input_specs(node_info) if not s.is_widget]


def widget_specs(node_info: dict) -> list[InputSpec]:
    return [s for s in input_specs(node_info) if s.is_widget]


def types_match(output_type: str, input_type: str) -> bool:
    """LiteGraph's rule: equal, either side "*", or sharing one of several comma-separated types."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return bool(set(output_type.upper().split(",")) & set(input_type.upper().split(",")))


def _node_info(object_info: dict, class_type: str, node_id) -> dict:
    try:
        return object_info[class_type]
    except KeyError:
        raise ValueError(f"node {node_id}: type {class_type!r} is not in /object_info; is the pack "
                         "that provides it installed and did it import?") from None


def _is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


# --- API format -> UI format --------------------------------------------------------------------

def api_to_ui(api_prompt: dict, object_info: dict, *, columns: list[list[str]] | None = None,
              groups: dict[str, list[str]] | None = None, colors: dict[str, tuple[str, str]] | None = None,
              seed_control: str = "fixed") -> dict:
    """The editor graph for an API prompt.

    columns: node ids per column, left to right, top to bottom (default: by depth in the graph).
    groups: group title -> node ids it frames. colors: node id -> (color, bgcolor).
    seed_control: the value of each "control_after_generate" combo ("fixed" keeps the seed).
    """
    if seed_control not in CONTROL_VALUES:
        raise ValueError(f"seed_control must be one of {CONTROL_VALUES}, got {seed_control!r}")
    ids = {api_id: _ui_id(api_id, i, api_prompt) for i, api_id in enumerate(api_prompt)}
    infos = {api_id: _node_info(object_info, node["class_type"], api_id) for api_id, node in api_prompt.items()}

    nodes: dict[str, dict] = {}
    for api_id, node in api_prompt.items():
        info, inputs = infos[api_id], node.get("inputs", {})
        unknown = set(inputs) - {s.name for s in input_specs(info)}
        if unknown:
            raise ValueError(f"node {api_id} ({node['class_type']}): inputs {sorted(unknown)} are not "
                             "in its definition")
        ui_inputs = [{"name": s.name, "type": s.type, "link": None} for s in socket_specs(info)]
        for spec in widget_specs(info):  # a widget fed by a link keeps a (linked) widget input
            if _is_link(inputs.get(spec.name)):
                ui_inputs.append({"name": spec.name, "type": spec.type, "widget": {"name": spec.name},
                                  "link": None})
        title = node.get("_meta", {}).get("title")
        nodes[api_id] = {
            "id": ids[api_id], "type": node["class_type"], "pos": [0, 0], "size": [0, 0], "flags": {},
            "order": 0, "mode": 0, "inputs": ui_inputs,
            "outputs": [{"name": name, "type": "COMBO" if isinstance(kind, list) else kind, "links": []}
                        for kind, name in zip(info.get("output", []), info.get("output_name", []))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": _widgets_values(api_id, info, inputs, seed_control),
        }
        if title and title != info.get("display_name", node["class_type"]):
            nodes[api_id]["title"] = title
        if colors and api_id in colors:
            nodes[api_id]["color"], nodes[api_id]["bgcolor"] = colors[api_id]

    links = []
    for api_id, node in api_prompt.items():
        for name, value in node.get("inputs", {}).items():
            if not _is_link(value):
                continue
            origin, slot = str(value[0]), value[1]
            if origin not in nodes:
                raise ValueError(f"node {api_id} input {name!r} links to node {origin}, which is not in the prompt")
            outputs = nodes[origin]["outputs"]
            if not 0 <= slot < len(outputs):
                raise ValueError(f"node {api_id} input {name!r} links to output {slot} of node {origin}, "
                                 f"which has {len(outputs)} outputs")
            target_slot = next(i for i, s in enumerate(nodes[api_id]["inputs"]) if s["name"] == name)
            link_id = len(links) + 1
            link_type = outputs[slot]["type"]
            links.append([link_id, ids[origin], slot, ids[api_id], target_slot, link_type])
            outputs[slot]["links"].append(link_id)
            nodes[api_id]["inputs"][target_slot]["link"] = link_id

    for position, api_id in enumerate(_execution_order(api_prompt)):
        nodes[api_id]["order"] = position
    for api_id, node in nodes.items():
        node["size"] = _node_size(infos[api_id], node)
    columns = columns or _columns_by_depth(api_prompt)
    _place(nodes, columns, groups or {})
    ui_groups = [_group(i + 1, title, [nodes[n] for n in members])
                 for i, (title, members) in enumerate((groups or {}).items())]

    return {
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": sorted(nodes.values(), key=lambda n: n["id"]),
        "links": links,
        "groups": ui_groups,
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [60, 120]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def _ui_id(api_id: str, index: int, api_prompt: dict) -> int:
    if not all(str(k).isdigit() for k in api_prompt):
        return index + 1  # ids like "3:1" (expanded subgraphs) are renumbered in prompt order
    return int(api_id)


def _widgets_values(api_id, info: dict, inputs: dict, seed_control: str) -> list:
    values = []
    for spec in widget_specs(info):
        if spec.name in inputs and not _is_link(inputs[spec.name]):
            value = inputs[spec.name]
        elif "default" in spec.options:
            value = spec.options["default"]
        elif spec.type == "COMBO" and _combo_choices(spec):
            value = _combo_choices(spec)[0]
        elif spec.optional or _is_link(inputs.get(spec.name)):
            value = None
        else:
            raise ValueError(f"node {api_id}: required widget {spec.name!r} has no value and no default")
        if isinstance(value, dict) and set(value) == {"__value__"}:
            value = value["__value__"]
        values.append(value)
        for extra in spec.widget_slots[1:]:
            values.append({"control_after_generate": seed_control, "control_filter_list": "",
                           "upload": "image"}[extra])
    return values


def _combo_choices(spec: InputSpec) -> list:
    return list(spec.options.get("options") or [])


def _execution_order(api_prompt: dict) -> list[str]:
    """Dependencies first, ties by id: the `order` field the editor saves."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(node_id: str):
        if node_id in done:
            return
        if node_id in visiting:
            raise ValueError(f"the prompt has a cycle through node {node_id}")
        visiting.add(node_id)
        for value in api_prompt[node_id].get("inputs", {}).values():
            if _is_link(value) and str(value[0]) in api_prompt:
                visit(str(value[0]))
        visiting.discard(node_id)
        done.append(node_id)

    for node_id in sorted(api_prompt, key=lambda k: (len(k), k)):
        visit(node_id)
    return done


def _columns_by_depth(api_prompt: dict) -> list[list[str]]:
    depth: dict[str, int] = {}
    for node_id in _execution_order(api_prompt):
        parents = [str(v[0]) for v in api_prompt[node_id].get("inputs", {}).values() if _is_link(v)]
        depth[node_id] = 1 + max((depth[p] for p in parents if p in depth), default=-1)
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in sorted(depth, key=lambda k: (len(k), k)):
        columns[depth[node_id]].append(node_id)
    return columns


def _node_size(info: dict, node: dict) -> list[int]:
    """About what LiteGraph's computeSize gives: a row per socket, a row per widget."""
    widgets = widget_specs(info)
    multiline = [s for s in widgets if s.type == "STRING" and s.options.get("multiline")]
    rows = max(len(node["inputs"]), len(node["outputs"]), 1)
    widget_rows = sum(len(s.widget_slots) for s in widgets if s not in multiline)
    height = rows * SLOT_HEIGHT + widget_rows * WIDGET_HEIGHT + len(multiline) * MULTILINE_HEIGHT + 14
    width = WIDE_NODE_WIDTH if multiline else NODE_WIDTH
    if info.get("output_node"):  # room for the images it shows after a run
        width, height = max(width, OUTPUT_NODE_SIZE[0]), max(height, OUTPUT_NODE_SIZE[1])
    return [width, height]


def _place(nodes: dict, columns: list[list[str]], groups: dict[str, list[str]]):
    placed = [n for column in columns for n in column]
    missing = set(nodes) - set(placed)
    if missing or len(placed) != len(set(placed)) or set(placed) - set(nodes):
        raise ValueError(f"columns must list every node once; missing {sorted(missing)}")
    group_of = {n: title for title, members in groups.items() for n in members}
    x = 0
    for column in columns:
        y = GROUP_TITLE + GROUP_PADDING
        previous_group = None
        for node_id in column:
            group = group_of.get(node_id)
            if previous_group is not None and group != previous_group:
                y += GROUP_TITLE + 2 * GROUP_PADDING  # room for the next group's frame and title
            node = nodes[node_id]
            node["pos"] = [x, y + TITLE_HEIGHT]
            y += TITLE_HEIGHT + node["size"][1] + ROW_GAP
            previous_group = group
        x += max(nodes[n]["size"][0] for n in column) + COLUMN_GAP


def _group(group_id: int, title: str, members: list[dict]) -> dict:
    left = min(n["pos"][0] for n in members) - GROUP_PADDING
    top = min(n["pos"][1] for n in members) - TITLE_HEIGHT - GROUP_TITLE
    right = max(n["pos"][0] + n["size"][0] for n in members) + GROUP_PADDING
    bottom = max(n["pos"][1] + n["size"][1] for n in members) + GROUP_PADDING
    return {"id": group_id, "title": title, "bounding": [left, top, right - left, bottom - top],
            "color": "#3f789e", "font_size": 24, "flags": {}}


# --- UI format -> API format ("Export (API)") ---------------------------------------------------

def ui_to_api(ui_workflow: dict, object_info: dict) -> dict:
    """What the editor's "Export (API)" sends for this graph (subgraphs not supported)."""
    if ui_workflow.get("definitions", {}).get("subgraphs"):
        raise ValueError("workflows with subgraphs are not supported")
    nodes = {node["id"]: node for node in ui_workflow.get("nodes", [])}
    links = {}
    for link in ui_workflow.get("links", []):
        if isinstance(link, dict):  # schema version 1 writes links as objects
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                    link["target_slot"], link.get("type")]
        links[link[0]] = link

    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        if node["type"] in VIRTUAL_NODE_TYPES or node.get("mode", 0) == MODE_NEVER:
            continue
        if node.get("mode", 0) == MODE_BYPASS:
            raise ValueError(f"node {node_id} ({node['type']}) is bypassed; bypass is not supported here")
        info = _node_info(object_info, node["type"], node_id)
        inputs = {name: {"__value__": value} if isinstance(value, list) else value
                  for name, value in _named_widget_values(node, info).items()}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            source = _resolve_link(links, nodes, slot["link"])
            if source is None:
                continue
            if source[0] == "value":
                value = source[1]
                inputs[slot["name"]] = {"__value__": value} if isinstance(value, list) else value
            else:
                inputs[slot["name"]] = [str(source[1]), int(source[2])]
        prompt[str(node_id)] = {"inputs": inputs, "class_type": node["type"],
                                "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}

    for node in prompt.values():  # links from nodes that are not sent are dropped, as the editor does
        for name, value in list(node["inputs"].items()):
            if _is_link(value) and value[0] not in prompt:
                del node["inputs"][name]
    return prompt


def _named_widget_values(node: dict, info: dict) -> dict:
    values = node.get("widgets_values")
    specs = widget_specs(info)
    if values is None:
        return {}
    if isinstance(values, dict):  # some packs save widgets by name
        return {s.name: values[s.name] for s in specs if s.name in values}
    expected = sum(len(s.widget_slots) for s in specs)
    if len(values) != expected:
        names = [slot for s in specs for slot in s.widget_slots]
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for "
                         f"{expected} widgets {names}; was it saved with another version of this node?")
    named, position = {}, 0
    for spec in specs:
        named[spec.name] = values[position]
        position += len(spec.widget_slots)
    return named


def _resolve_link(links: dict, nodes: dict, link_id: int):
    """("node", origin_id, slot), ("value", v) for a PrimitiveNode, or None if it leads nowhere."""
    seen = set()
    while link_id is not None and link_id not in seen:
        seen.add(link_id)
        link = links.get(link_id)
        if link is None:
            return None
        origin = nodes.get(link[1])
        if origin is None:
            return None
        if origin["type"] == "Reroute":
            link_id = (origin.get("inputs") or [{}])[0].get("link")
            continue
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        return ("node", link[1], link[2])
    return None


# --- The bundled workflow -----------------------------------------------------------------------

# Layout of example_workflows/text_to_image.json: loaders left, prompts and size, the two samplers,
# then decode and save on the right.
TEXT_TO_IMAGE_LAYOUT = {
    "columns": [["1", "2", "3", "4", "5"], ["6", "7", "8"], ["9", "10"], ["11", "12"]],
    "groups": {"Models": ["1", "2", "3", "4", "5"], "Prompt and size": ["6", "7", "8"],
               "Stage C, then Stage B": ["9", "10"], "Stage A and save": ["11", "12"]},
    "colors": {"6": ("#232", "#353"), "7": ("#322", "#533")},  # the editor's green / red
}


def load_object_info(source: str) -> dict:
    """/object_info saved from a running host with this pack (curl http://127.0.0.1:8188/object_info)."""
    return json.loads(Path(source).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_json", type=Path)
    parser.add_argument("ui_json", type=Path)
    parser.add_argument("--object-info", required=True, help="/object_info of a running host, saved as JSON")
    args = parser.parse_args(argv)
    api_prompt = json.loads(args.api_json.read_text())
    object_info = load_object_info(args.object_info)
    layout = TEXT_TO_IMAGE_LAYOUT if args.api_json.name == "text_to_image_api.json" else {}
    ui = api_to_ui(api_prompt, object_info, **layout)
    back = ui_to_api(ui, object_info)
    strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}  # noqa: E731
    if strip(back) != strip(api_prompt):
        print("the UI workflow does not convert back to the API prompt", file=sys.stderr)
        return 1
    args.ui_json.write_text(json.dumps(ui, indent=2) + "\n")
    print(f"wrote {args.ui_json}: {len(ui['nodes'])} nodes, {len(ui['links'])} links")
    return 0


if __name__ == "__main__":
    sys.exit(main())
