"""Converting a workflow saved by ComfyUI's frontend (UI format) into the API prompt that POST /prompt
takes, using the server's /object_info to know which inputs are widgets and in what order.

What the frontend does when it queues a workflow, and so what this does:
  * widget values (``widgets_values``) belong, in order, to the node's inputs that are widgets
    (combo lists, INT, FLOAT, STRING, BOOLEAN, COMBO; not ``forceInput`` ones), required then optional;
  * an INT seed widget (named seed / noise_seed, or flagged ``control_after_generate``) is followed by
    the frontend-only "control after generate" value (fixed / increment / decrement / randomize),
    which is skipped; values left over at the end (upload buttons) are ignored; widgets the node has
    beyond the saved values (added by a newer host since the workflow was saved) get their defaults;
  * a link becomes ``[source node id, output slot]``;
  * frontend-only nodes are not sent: Note / MarkdownNote (dropped), Reroute (followed to its source),
    PrimitiveNode (its value replaces the link); muted nodes (mode 2) are dropped and bypassed nodes
    (mode 4) pass the input of the link's type through.
Subgraphs and combo "control after generate" widgets are not handled (none of the shipped workflows
use them).
"""

from __future__ import annotations

import copy

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
SEED_WIDGET_NAMES = {"seed", "noise_seed"}
NOTE_TYPES = {"Note", "MarkdownNote"}
FRONTEND_ONLY_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted: the message names the node and what was expected."""


def _is_widget(spec) -> bool:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_value_control(name: str, spec) -> bool:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    return kind == "INT" and (name in SEED_WIDGET_NAMES or bool(options.get("control_after_generate")))


def ordered_inputs(node_info: dict) -> list[tuple[str, object]]:
    """(name, spec) of a node class's required then optional inputs, in the server's order."""
    declared = node_info.get("input", {})
    order = node_info.get("input_order") or {}
    result = []
    for section in ("required", "optional"):
        specs = declared.get(section) or {}
        names = order.get(section) or list(specs)
        result.extend((name, specs[name]) for name in names if name in specs)
    return result


def widget_names(node_type: str, object_info: dict) -> list[str]:
    """Names of a node class's widget inputs, in the order its widgets_values hold them."""
    if node_type not in object_info:
        raise WorkflowError(f"node type {node_type!r} is not in the server's /object_info; "
                            "expected a built-in node or one of an installed pack.")
    return [name for name, spec in ordered_inputs(object_info[node_type]) if _is_widget(spec)]


def widget_values(node: dict, object_info: dict) -> dict:
    """{widget name: value} of one UI node, skipping the frontend's control-after-generate values."""
    info = object_info[node["type"]]
    raw = node.get("widgets_values") or []
    if isinstance(raw, dict):  # some packs save widgets by name
        return {name: raw[name] for name in widget_names(node["type"], object_info) if name in raw}
    values, position = {}, 0
    for name, spec in ordered_inputs(info):
        if not _is_widget(spec):
            continue
        if position >= len(raw):
            break
        values[name] = raw[position]
        position += 1
        if _has_value_control(name, spec) and position < len(raw) and raw[position] in CONTROL_VALUES:
            position += 1
    return values


def _widget_index(node: dict, name: str, object_info: dict) -> int:
    raw, position = node.get("widgets_values") or [], 0
    for input_name, spec in ordered_inputs(object_info[node["type"]]):
        if not _is_widget(spec):
            continue
        if input_name == name:
            return position
        position += 1
        if _has_value_control(input_name, spec) and position < len(raw) and raw[position] in CONTROL_VALUES:
            position += 1
    raise WorkflowError(f"node {node.get('id')} ({node['type']}) has no widget {name!r}; "
                        f"expected one of {widget_names(node['type'], object_info)}.")


def set_widget(workflow: dict, node_id, name: str, value, object_info: dict) -> dict:
    """Set one widget value of a UI workflow in place (as a user editing the canvas would); returns it."""
    node = find_node(workflow, node_id)
    index = _widget_index(node, name, object_info)
    if isinstance(node.get("widgets_values"), dict):
        node["widgets_values"][name] = value
        return workflow
    if index >= len(node.get("widgets_values") or []):
        raise WorkflowError(f"node {node_id} ({node['type']}) saves only {len(node.get('widgets_values') or [])} "
                            f"widget values; expected at least {index + 1} to set {name!r}.")
    node["widgets_values"][index] = value
    return workflow


def find_node(workflow: dict, node_id) -> dict:
    for node in workflow.get("nodes", []):
        if str(node["id"]) == str(node_id):
            return node
    raise WorkflowError(f"workflow has no node with id {node_id}.")


def nodes_of_type(workflow: dict, node_type: str) -> list[dict]:
    return [node for node in workflow.get("nodes", []) if node.get("type") == node_type]


def _links_by_id(workflow: dict) -> dict:
    """{link id: (origin node id, origin slot, link type)} for list (v0.4) and object (v1) links."""
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            link_id, origin, slot, _target, _target_slot, link_type = link[:6]
            links[link_id] = (origin, slot, link_type)
    return links


def _resolve(link_id, links: dict, nodes: dict, trail=()):
    """Follow a link through Reroutes and bypassed nodes: ("link", [id, slot]), ("value", v) or None."""
    if link_id in trail:
        raise WorkflowError(f"link {link_id} is part of a loop.")
    if link_id not in links:
        raise WorkflowError(f"link {link_id} is used by a node but missing from the workflow's links.")
    origin, slot, link_type = links[link_id]
    node = nodes.get(str(origin))
    if node is None:
        raise WorkflowError(f"link {link_id} starts at node {origin}, which is not in the workflow.")
    trail = (*trail, link_id)
    if node.get("mode") == MODE_MUTED:
        return None
    if node["type"] == "Reroute" or node.get("mode") == MODE_BYPASSED:
        inputs = [i for i in node.get("inputs") or [] if i.get("link") is not None]
        if node["type"] != "Reroute":  # bypass: the input of the same type, preferring the same slot
            same = [i for i in inputs if i.get("type") == link_type]
            slot_first = [i for n, i in enumerate(node.get("inputs") or []) if n == slot and i in same]
            inputs = slot_first or same
        return _resolve(inputs[0]["link"], links, nodes, trail) if inputs else None
    if node["type"] == "PrimitiveNode":
        values = node.get("widgets_values") or []
        if not values:
            raise WorkflowError(f"PrimitiveNode {origin} has no value; expected widgets_values[0].")
        return ("value", values[0])
    return ("link", [str(origin), int(slot)])


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """The API prompt ({node id: {"class_type", "inputs", "_meta"}}) for a UI-format workflow."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("workflow uses subgraphs; expected a flat workflow.")
    nodes = {str(node["id"]): node for node in workflow.get("nodes", [])}
    links = _links_by_id(workflow)
    prompt = {}
    for node_id, node in nodes.items():
        node_type = node.get("type")
        if node_type in FRONTEND_ONLY_TYPES and node_type not in object_info:
            continue
        if node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        if node_type not in object_info:
            raise WorkflowError(f"node {node_id} has type {node_type!r}, which the server does not know; "
                                "expected a built-in node or one of an installed pack.")
        declared = dict(ordered_inputs(object_info[node_type]))
        inputs = copy.deepcopy(widget_values(node, object_info))
        for name, spec in declared.items():  # widgets newer than the saved workflow: their defaults
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            if _is_widget(spec) and name not in inputs and "default" in options:
                inputs[name] = options["default"]
        for slot in node.get("inputs") or []:
            name = slot.get("name")
            if slot.get("widget"):  # a widget turned into a socket keeps its widget's name
                name = slot["widget"].get("name", name)
            if slot.get("link") is None or name not in declared:
                continue
            resolved = _resolve(slot["link"], links, nodes)
            if resolved is None:
                inputs.pop(name, None)
            else:
                inputs[name] = resolved[1]
        prompt[node_id] = {"class_type": node_type, "inputs": inputs,
                           "_meta": {"title": node.get("title") or node_type}}
    return prompt
