"""Every node's schema, in-process (no server): it builds, and it says what the node is.

A schema that raises while the host loads the pack drops that node and every node listed after
it, with only a log line to show for it; these tests name the node instead.
"""
PREFIX = "SCPack_"
CATEGORY_ROOT = "stable_cascade/"


def _schemas(pack_node_classes):
    return [(cls, cls.GET_SCHEMA()) for cls in pack_node_classes]


def test_the_extension_lists_nodes(pack_node_classes):
    assert pack_node_classes, "get_node_list() returned no nodes"


def test_every_schema_builds(pack_node_classes):
    problems = []
    for cls in pack_node_classes:
        try:
            schema = cls.GET_SCHEMA()  # define_schema() + finalize() + validate(), as the host does
            cls.GET_NODE_INFO_V1()  # what /object_info serves
        except Exception as exc:  # noqa: BLE001 - report every broken node, not just the first
            problems.append(f"{cls.__qualname__}: {type(exc).__name__}: {exc}")
        else:
            assert schema.node_id
    assert not problems, "\n".join(problems)


def test_node_ids_are_prefixed_and_unique(pack_node_classes):
    ids = [schema.node_id for _, schema in _schemas(pack_node_classes)]
    assert [i for i in ids if not i.startswith(PREFIX)] == [], f"every node id starts with {PREFIX}"
    assert len(ids) == len(set(ids)), f"duplicate node ids: {sorted(i for i in ids if ids.count(i) > 1)}"


def test_every_node_has_a_name_a_description_and_a_category(pack_node_classes):
    problems = []
    for _, schema in _schemas(pack_node_classes):
        if not schema.display_name:
            problems.append(f"{schema.node_id}: no display_name")
        if not (schema.description or "").strip():
            problems.append(f"{schema.node_id}: no description")
        if not (schema.category or "").startswith(CATEGORY_ROOT):
            problems.append(f"{schema.node_id}: category {schema.category!r} is not under {CATEGORY_ROOT}")
    assert not problems, "\n".join(problems)


def test_every_input_has_a_tooltip(pack_node_classes):
    problems = [f"{schema.node_id}.{node_input.id}: no tooltip"
                for _, schema in _schemas(pack_node_classes)
                for node_input in schema.inputs
                if not (node_input.tooltip or "").strip()]
    assert not problems, "\n".join(problems)
