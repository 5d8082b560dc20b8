"""The pack in the real host: it loads, its nodes are registered, bad input is refused cleanly."""
from devtools.host_server import PromptRejected


def test_pack_imports_without_errors(host_server):
    problems = host_server.pack_import_problems()
    assert not problems, "the host's log shows the pack failing to load:\n" + "\n".join(problems)
    log = host_server.log_text()
    for line in log.splitlines():
        if "IMPORT FAILED" in line:
            assert host_server.pack_link.name not in line, line


def test_every_pack_node_is_registered_by_the_pack(host_server, pack_node_classes):
    """Each node the extension lists is in /object_info as the pack's own. The host silently keeps
    its core node when a custom node reuses the id, so a collision shows as an entry from another
    module (or, when a schema raised while loading, as a missing entry)."""
    object_info = host_server.object_info()
    expected = [cls.GET_SCHEMA().node_id for cls in pack_node_classes]
    assert expected, "the extension lists no nodes"
    problems = []
    for node_id in expected:
        info = object_info.get(node_id)
        if info is None:
            problems.append(f"{node_id}: missing from /object_info (see the host log for why)")
        elif info.get("python_module") != host_server.pack_python_module:
            problems.append(f"{node_id}: collides with the host's node from {info.get('python_module')}")
    registered = set(host_server.pack_nodes())
    unexpected = registered - set(expected)
    if unexpected:
        problems.append(f"registered from the pack but not in get_node_list(): {sorted(unexpected)}")
    assert not problems, "\n".join(problems)


def test_pack_nodes_are_described_in_object_info(host_server):
    """What the frontend shows: a description, a category under stable_cascade/, input tooltips."""
    problems = []
    for node_id, info in sorted(host_server.pack_nodes().items()):
        if not info.get("description"):
            problems.append(f"{node_id}: no description")
        if not (info.get("category") or "").startswith("stable_cascade/"):
            problems.append(f"{node_id}: category {info.get('category')!r} is not under stable_cascade/")
        for section in ("required", "optional"):
            for name, spec in info.get("input", {}).get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not options.get("tooltip"):
                    problems.append(f"{node_id}.{name}: no tooltip")
    assert not problems, "\n".join(problems)


def _widget_value(spec):
    """A valid literal for a widget input: its default or a combo's first option; None if the
    input is a socket (a link is needed)."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return kind[0] if kind else None
    if kind == "COMBO":
        return (options.get("options") or [None])[0]
    return options.get("default")


def _output_node_taking(object_info, io_type):
    """A core output node with a required input of `io_type` whose other required inputs are
    all widgets: a consumer for a loader's output. Returns (node id, input name, widget values)."""
    for node_id, info in sorted(object_info.items()):
        if not info.get("output_node") or info.get("python_module", "").startswith("custom_nodes."):
            continue
        required = info.get("input", {}).get("required", {})
        for name, spec in required.items():
            if spec[0] != io_type:
                continue
            others = {k: _widget_value(v) for k, v in required.items() if k != name}
            if all(v is not None for v in others.values()):
                return node_id, name, others
    raise AssertionError(f"no core output node takes {io_type} with only widgets besides")


def test_missing_model_file_is_refused_and_server_keeps_serving(host_server):
    object_info = host_server.object_info()
    loader = object_info["SCPack_StageCLoader"]
    consumer, consumer_input, consumer_widgets = _output_node_taking(object_info, loader["output"][0])
    loader_widgets = {k: _widget_value(v) for k, v in loader["input"]["required"].items()}
    prompt = {
        "1": {"class_type": "SCPack_StageCLoader",
              "inputs": {**loader_widgets, "unet_name": "does_not_exist.safetensors"}},
        "2": {"class_type": consumer, "inputs": {**consumer_widgets, consumer_input: ["1", 0]}},
    }
    try:
        prompt_id = host_server.queue_prompt(prompt)
    except PromptRejected as rejected:
        assert rejected.status == 400
        errors = rejected.node_errors.get("1", {}).get("errors", [])
        assert errors, f"no error for the loader node: {rejected.body}"
        error = errors[0]
        # 0.3.75 checks V3 combo values against their options only in the node's own
        # validate_inputs (a custom_validation_failed); V1 lists and newer hosts: value_not_in_list.
        assert error["type"] in ("value_not_in_list", "custom_validation_failed"), error
        assert error["extra_info"]["input_name"] == "unet_name", error
        assert "does_not_exist.safetensors" in error["details"], error
    else:
        host_server.request("POST", "/queue", {"delete": [prompt_id]})
        host_server.interrupt(prompt_id)
        raise AssertionError(
            "a prompt naming a missing model file passed validation (ComfyUI 0.3.75 does not check "
            "V3 combo values itself: the loader needs validate_inputs)")

    assert host_server.is_serving()
    result = host_server.run_prompt({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }, timeout=120)
    assert result.outcome == "success", result.messages
    assert result.history["status"]["status_str"] == "success"
    (image,) = host_server.output_images(result)
    assert image.size == (8, 8)


def test_harness_follows_a_prompt_over_the_websocket(host_server, host_client):
    """The message sequence the harness relies on (reference/comfyui-host.md §3.3)."""
    prompt_id = host_client.queue({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 255}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    })
    result = host_client.wait_done(prompt_id, timeout=120)
    types = [m.type for m in result.messages]
    for expected in ("execution_start", "executing", "executed", "execution_success"):
        assert expected in types, types
    assert result.messages[-1].type == "executing" and result.messages[-1].data["node"] is None
    assert result.outcome == "success" and result.error is None
    assert list(result.outputs) == ["2"]
    images = host_server.output_images(result)
    assert [image.size for image in images] == [(16, 8), (16, 8)]
    assert host_server.history(prompt_id)["status"]["completed"] is True


def test_harness_reports_an_execution_error(host_server, host_client):
    """A prompt that passes validation and fails while running ends with execution_error."""
    prompt_id = host_client.queue({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../outside"}},
    })
    result = host_client.wait_done(prompt_id, timeout=120)
    assert result.outcome == "error", [m.type for m in result.messages]
    assert result.error["node_type"] == "SaveImage"
    assert "outside" in result.error["exception_message"]
    assert result.history["status"]["status_str"] == "error"
    assert host_server.is_serving()
