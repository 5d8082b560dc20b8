"""The loader names that error messages quote are the nodes' own display names (stages/checkpoint/kinds.py)."""
import re
import sys
from pathlib import Path

from stable_cascade_pack.stages.checkpoint import FILE_KINDS, file_kind
import stable_cascade_pack.stages.checkpoint.identify  # noqa: F401 (the module, not the function)


def _pack_display_names(pack_node_classes):
    return {schema.node_id: schema.display_name for schema in (cls.GET_SCHEMA() for cls in pack_node_classes)}


def test_quoted_pack_loaders_are_the_schemas_display_names(pack_node_classes):
    display_names = _pack_display_names(pack_node_classes)
    quoted = [loader for record in FILE_KINDS.values() for loader in record.loaders if not loader.host]
    assert quoted, "no record names a loader of this pack"
    for loader in quoted:
        assert loader.node_id in display_names, f"{loader.node_id} is not a node of this pack"
        assert loader.display_name == display_names[loader.node_id], loader.node_id


def test_quoted_host_loaders_are_the_hosts_display_names(host_modules):
    import nodes as host_nodes  # the host's own nodes.py (our package is stable_cascade_pack.nodes)

    for record in FILE_KINDS.values():
        for loader in record.loaders:
            if loader.host:
                assert host_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(loader.node_id) == loader.display_name, loader.node_id


def test_input_names_quoted_with_a_loader_are_its_inputs(pack_node_classes):
    schemas = {schema.node_id: schema for schema in (cls.GET_SCHEMA() for cls in pack_node_classes)}
    for record in FILE_KINDS.values():
        for input_name in re.findall(r"^\((\w+_name)\)$", record.loader_detail):
            for loader in record.loaders:
                assert input_name in [i.id for i in schemas[loader.node_id].inputs], (record.kind, input_name)


def test_every_kind_identify_answers_has_one_record():
    """Kinds as identify.py writes them: CheckpointInfo("kind", ...), _with_config("kind", ...), kind = "a" if ... else "b"."""
    source = Path(sys.modules["stable_cascade_pack.stages.checkpoint.identify"].__file__).read_text()
    answered = set(re.findall(r'(?:CheckpointInfo|_with_config)\("(\w+)"', source))
    for pair in re.findall(r'kind = "(\w+)" if .* else "(\w+)"', source):
        answered.update(pair)
    assert {"stage_c", "stage_b", "bundled_stage_c", "controlnet", "lora", "empty", "unknown"} <= answered
    assert answered == set(FILE_KINDS)
    assert all(file_kind(kind).kind == kind for kind in answered)
    assert file_kind("not_a_kind").taken_by() is None
