"""Run in a fresh interpreter by bench_startup.py (and the start-up test): import the node pack of a
source tree the way ComfyUI imports a custom node folder, with a stub ``folder_paths`` (empty model
folders), register its nodes the way ComfyUI does and call every node's INPUT_TYPES() (what
/object_info does), and print one JSON line: the seconds each stage took and which heavy packages
were imported by then.

A V1 tree registers through NODE_CLASS_MAPPINGS. A V3 tree (comfy_entrypoint) needs ComfyUI's
comfy_api: it is taken from COMFYUI_PATH and imported first, timed apart as ``host_s`` (ComfyUI has
imported it, for its own nodes, long before it imports custom nodes); registering then means the
entry point, get_node_list and each node's GET_SCHEMA (ComfyUI's start-up check).

    python benchmarks/startup_probe.py TREE [translate]

With ``translate`` it instead imports what ``python -m wan_egoexo translate`` imports before it loads
a model (the CLI module and the pipeline).
"""

import asyncio
import importlib.util
import json
import os
import sys
import time
import types

HEAVY = ("diffusers", "peft", "transformers", "torch._dynamo", "folder_paths", "comfy")


def _loaded() -> dict:
    return {name: name in sys.modules for name in HEAVY}


def _stub_host() -> None:
    fp = types.ModuleType("folder_paths")
    fp.folder_names_and_paths = {}
    fp.get_filename_list = lambda name: []
    fp.get_folder_paths = lambda name: []
    fp.get_input_directory = lambda: "/nonexistent-input"
    sys.modules["folder_paths"] = fp


def probe_nodes(tree: str) -> dict:
    start = time.perf_counter()
    import torch  # noqa: F401  (ComfyUI has imported torch long before it imports custom nodes)

    torch_s = time.perf_counter() - start
    host_s = 0.0
    with open(f"{tree}/__init__.py") as entry:
        v3 = "comfy_entrypoint" in entry.read()
    if v3:
        start = time.perf_counter()
        if not os.environ.get("COMFYUI_PATH"):
            raise SystemExit(f"{tree} has V3 nodes: set COMFYUI_PATH to a ComfyUI source tree (0.3.64 or later).")
        sys.path.append(os.environ["COMFYUI_PATH"])
        import comfy_api.latest  # noqa: F401

        host_s = time.perf_counter() - start
    after_host = _loaded()
    start = time.perf_counter()
    spec = importlib.util.spec_from_file_location("ComfyUI-WorldWander-probe", f"{tree}/__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    import_s = time.perf_counter() - start
    after_import = _loaded()
    _stub_host()
    start = time.perf_counter()
    if hasattr(pack, "NODE_CLASS_MAPPINGS"):
        classes = list(pack.NODE_CLASS_MAPPINGS.values())
    else:
        classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
        for cls in classes:
            cls.GET_SCHEMA()
    for cls in classes:
        cls.INPUT_TYPES()
    input_types_s = time.perf_counter() - start
    return {"torch_s": torch_s, "host_s": host_s, "import_s": import_s, "input_types_s": input_types_s,
            "nodes": len(classes), "after_host": after_host, "after_import": after_import,
            "after_input_types": _loaded()}


def probe_translate(tree: str) -> dict:
    sys.path.insert(0, tree)
    start = time.perf_counter()
    import torch  # noqa: F401

    torch_s = time.perf_counter() - start
    start = time.perf_counter()
    import wan_egoexo.cli.main  # noqa: F401
    import wan_egoexo.cli.translate  # noqa: F401

    return {"torch_s": torch_s, "import_s": time.perf_counter() - start, "after_import": _loaded(),
            "wan_egoexo_modules": sorted(m for m in sys.modules if m.startswith("wan_egoexo."))}


if __name__ == "__main__":
    tree = sys.argv[1]
    result = probe_translate(tree) if sys.argv[2:] == ["translate"] else probe_nodes(tree)
    print(json.dumps(result))
