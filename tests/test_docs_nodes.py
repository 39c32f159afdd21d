"""docs/nodes.md against the nodes themselves: every node has a row, and its row names every input and
output the node really has (read from its V3 schema on the stubbed ComfyUI host), so the page cannot
fall behind an added input."""

import re

from stub_comfy_host import (  # noqa: F401  (fixtures)
    REPO,
    host,
    models_dir,
    nodes,
    schema,
)

ROW = re.compile(r"^\| (?P<name>WorldWander [^|]+?) \| (?P<inputs>[^|]*) \| (?P<outputs>[^|]*) \|")


def _rows() -> dict[str, tuple[str, str]]:
    rows = [ROW.match(line) for line in (REPO / "docs/nodes.md").read_text().splitlines()]
    return {row["name"]: (row["inputs"], row["outputs"]) for row in rows if row}


def test_nodes_md_names_every_input_and_output_of_every_node(host, nodes):  # noqa: F811
    display = {key: schema(cls).display_name for key, cls in nodes.items()}
    rows = _rows()
    assert set(rows) == {display[key] for key in nodes}, "docs/nodes.md: a node without a row, or a row without a node"
    missing = []
    for key, cls in nodes.items():
        inputs_cell, outputs_cell = rows[display[key]]
        names = [item.id for item in schema(cls).inputs]
        missing += [f"{display[key]}: input {name}" for name in names if f"`{name}`" not in inputs_cell]
        missing += [f"{display[key]}: output {item.display_name}" for item in schema(cls).outputs
                    if f"`{item.display_name}`" not in outputs_cell]
    assert not missing, f"docs/nodes.md does not name: {missing}"
