"""Run in a fresh interpreter by bench_startup.py (and the start-up test): import the node pack of a
source tree the way ComfyUI imports a custom node folder, with a stub ``folder_paths`` (empty model
folders), call every node's INPUT_TYPES(), and print one JSON line: the seconds each stage took and
which heavy packages were imported by then.

    python benchmarks/startup_probe.py TREE [translate]

With ``translate`` it instead imports what ``python -m wan_egoexo translate`` imports before it loads
a model (the CLI module and the pipeline).
"""

import importlib.util
import json
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
    start = time.perf_counter()
    spec = importlib.util.spec_from_file_location("ComfyUI-WorldWander-probe", f"{tree}/__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    import_s = time.perf_counter() - start
    after_import = _loaded()
    _stub_host()
    start = time.perf_counter()
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        cls.INPUT_TYPES()
    input_types_s = time.perf_counter() - start
    return {"torch_s": torch_s, "import_s": import_s, "input_types_s": input_types_s,
            "nodes": len(pack.NODE_CLASS_MAPPINGS), "after_import": after_import, "after_input_types": _loaded()}


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
