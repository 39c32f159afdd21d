"""The pack's /object_info before the V3 migration (tests/fixtures/object_info_v1.json: the V1 nodes of
commit 50d9545 on a real ComfyUI 0.3.64 server, with the e2e tests' tiny models folder and an empty
input folder) and a comparison of any /object_info with it that allows only what the V3 path adds.

What must not change, for every saved workflow and API prompt to keep working: the node ids, each
input's name, section (required / optional), position, type, default, range and menu, every tooltip,
the output types and names, display name, category, description and output_node. What V3 may add:
``multiselect: false`` on menus, ``multiline: false`` on strings, the hidden prompt / extra_pnginfo of an
output node, and node-level flags (deprecated, experimental, api_node, ... on 0.33.0 more).

Menus: V1 writes ``[[options], {...}]``, V3 ``["COMBO", {"options": [...], ...}]``; both mean the same
to both frontends and to the API, so each is read as ("COMBO", options). Folder listings (``FILE_LISTS``)
depend on the server's folders, so they are compared only where ``strict_lists`` names them.
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1_OBJECT_INFO = FIXTURES / "object_info_v1.json"
V1_WORKFLOWS = FIXTURES / "workflows_v1"
FILE_LISTS = {"video", "model_name", "lora_name", "vae_name", "text_encoder_name"}
# keys V3 adds to an input's options, with the only value each may have
ADDED_INPUT_KEYS = {"multiselect": False, "multiline": False}
COMPARED_NODE_KEYS = ("name", "display_name", "category", "description", "output_node", "output", "output_name",
                      "output_is_list")


def v1_object_info() -> dict:
    return json.loads(V1_OBJECT_INFO.read_text())


def _input_view(kind, options: dict) -> tuple:
    options = dict(options)
    if isinstance(kind, list):
        kind, menu = "COMBO", list(kind)
    elif kind == "COMBO":
        menu = list(options.pop("options", []))
    else:
        menu = None
    return kind, menu, options


def differences(node: str, old: dict, new: dict, strict_lists=()) -> list[str]:
    """Every way ``new`` (an /object_info entry of the migrated node) differs from ``old`` (its V1 entry)
    beyond what V3 adds; [] when a V1 workflow or API prompt means the same to both."""
    found = []
    for key in COMPARED_NODE_KEYS:
        if old.get(key) != new.get(key) and not (key == "output_is_list" and key not in old):
            found.append(f"{node}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    old_tips = old.get("output_tooltips") or [None] * len(old.get("output", []))
    if list(old_tips) != list(new.get("output_tooltips") or [None] * len(new.get("output", []))):
        found.append(f"{node}.output_tooltips: {old_tips!r} -> {new.get('output_tooltips')!r}")
    for section in ("required", "optional"):
        old_inputs, new_inputs = old["input"].get(section, {}), new["input"].get(section, {})
        if list(old_inputs) != list(new_inputs):
            found.append(f"{node}.input.{section}: {list(old_inputs)} -> {list(new_inputs)}")
        old_order = old.get("input_order", {}).get(section) or []
        new_order = new.get("input_order", {}).get(section) or []
        if old_order != new_order or new_order != list(new_inputs):
            found.append(f"{node}.input_order.{section}: {old_order} -> {new_order}")
        for name in old_inputs.keys() & new_inputs.keys():
            old_kind, old_menu, old_options = _input_view(*old_inputs[name])
            new_kind, new_menu, new_options = _input_view(*new_inputs[name])
            if old_kind != new_kind:
                found.append(f"{node}.{name}: type {old_kind} -> {new_kind}")
            if old_menu != new_menu and (name not in FILE_LISTS or name in strict_lists):
                found.append(f"{node}.{name}: menu {old_menu} -> {new_menu}")
            for key in old_options.keys() | new_options.keys():
                if key in old_options and old_options[key] != new_options.get(key):
                    found.append(f"{node}.{name}.{key}: {old_options[key]!r} -> {new_options.get(key)!r}")
                elif key not in old_options and (key not in ADDED_INPUT_KEYS
                                                 or new_options[key] != ADDED_INPUT_KEYS[key]):
                    found.append(f"{node}.{name}.{key}: added {new_options[key]!r}")
    hidden = new["input"].get("hidden", {})
    allowed_hidden = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]} if old.get("output_node") else {}
    if {key: list(value) for key, value in hidden.items()} != allowed_hidden and hidden != old["input"].get("hidden"):
        found.append(f"{node}.input.hidden: {hidden!r}")
    return found


def all_differences(object_info: dict, strict_lists=()) -> list[str]:
    """differences() for every V1 node; a V1 node missing from ``object_info`` counts too (nodes added since
    are not compared: no old workflow uses them)."""
    old = v1_object_info()
    found = [f"{node}: missing" for node in old if node not in object_info]
    for node in old.keys() & object_info.keys():
        found += differences(node, old[node], object_info[node], strict_lists)
    return found
