"""A small builder for ComfyUI UI-format (version 0.4) workflows: nodes with their widget values,
links by output slot and input name (the link type is the output's), execution order from the
links, and ``properties.models`` on nodes that load a model file, the way ComfyUI's own templates
carry them so the frontend can offer the download of a missing file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file as a template names it: file name, ComfyUI models/ folder, URL."""

    name: str
    directory: str
    url: str

    def entry(self) -> dict:
        return {"name": self.name, "url": self.url, "directory": self.directory}


class Graph:
    def __init__(self):
        self.nodes: dict[int, dict] = {}
        self.links: list[list] = []

    def add(self, node_id: int, node_type: str, pos, size, widgets=(), outputs=(), inputs=(), title=None,
            models: tuple[ModelFile, ...] = ()) -> dict:
        """A node; ``outputs`` are (name, type); ``inputs`` are (name, type) or (name, type, widget name)
        for a widget turned into a socket."""
        if node_id in self.nodes:
            raise ValueError(f"node id {node_id} is used twice")
        properties = {"Node name for S&R": node_type}
        if models:
            properties["models"] = [model.entry() for model in models]
        node = {"id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                "mode": 0, "inputs": [], "outputs": [], "properties": properties, "widgets_values": list(widgets)}
        for spec in inputs:
            socket = {"name": spec[0], "type": spec[1], "link": None}
            if len(spec) > 2:
                socket["widget"] = {"name": spec[2]}
            node["inputs"].append(socket)
        for slot, (name, kind) in enumerate(outputs):
            node["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
        if title:
            node["title"] = title
        self.nodes[node_id] = node
        return node

    def link(self, source: int, slot: int, target: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        output = self.nodes[source]["outputs"][slot]
        sink = self.nodes[target]
        index = next((i for i, socket in enumerate(sink["inputs"]) if socket["name"] == input_name), None)
        if index is None:
            raise KeyError(f"node {target} ({sink['type']}) has no input {input_name!r}")
        if sink["inputs"][index]["link"] is not None:
            raise ValueError(f"input {input_name!r} of node {target} is linked twice")
        sink["inputs"][index]["link"] = link_id
        output["links"].append(link_id)
        self.links.append([link_id, source, slot, target, index, output["type"]])

    def _execution_order(self) -> list[int]:
        """Nodes in a topological order of the links (ties by id), as the frontend numbers them."""
        waiting = {node_id: {link[1] for link in self.links if link[3] == node_id} for node_id in self.nodes}
        order = []
        while waiting:
            ready = sorted(node_id for node_id, needs in waiting.items() if not needs - set(order))
            if not ready:
                raise ValueError(f"the links form a loop among nodes {sorted(waiting)}")
            order.append(ready[0])
            del waiting[ready[0]]
        return order

    def to_json(self) -> dict:
        for index, node_id in enumerate(self._execution_order()):
            self.nodes[node_id]["order"] = index
        return {"last_node_id": max(self.nodes), "last_link_id": len(self.links),
                "nodes": [self.nodes[node_id] for node_id in sorted(self.nodes)], "links": self.links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
