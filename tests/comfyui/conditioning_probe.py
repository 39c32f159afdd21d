"""Encodes the WorldWander prompts twice, with ComfyUI's stock text path (CLIPLoader type "wan" +
CLIPTextEncode, ComfyUI's own modules imported in this process) and with the pack's WorldWander
Text Encode (its CONDITIONING outputs), and prints both as JSON figures.

    python conditioning_probe.py COMFYUI_DIR MODELS_DIR PACK_DIR CACHE_DIR TEXT_ENCODER_FILE

The UMT5 file (in MODELS_DIR/text_encoders) must be one ComfyUI can build from the (test-adjusted)
umt5_config_xxl.json of COMFYUI_DIR. ComfyUI computes UMT5 in the dtype of the file's unquantised
tensors (fp16 in the released file; fp32 in the test's file, so that only the code is compared).
Started by test_text_conditioning.py in a fresh process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch


def main(comfy_dir, models_dir, pack_dir, cache_dir, file_name) -> None:
    os.environ["WAN_EGOEXO_CACHE"] = cache_dir
    sys.path.insert(0, comfy_dir)
    import comfy.options  # noqa: PLC0415

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args  # noqa: PLC0415

    args.cpu = True
    import folder_paths  # noqa: PLC0415
    import nodes as comfy_nodes  # noqa: PLC0415  (ComfyUI's built-in nodes)

    folder_paths.add_model_folder_path("text_encoders", str(Path(models_dir) / "text_encoders"))
    spec = importlib.util.spec_from_file_location("WorldWanderPack", Path(pack_dir) / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    import wan_egoexo.models.text_encoder_loader as loader_module  # noqa: PLC0415
    from wan_egoexo.in_context.tasks import TASKS  # noqa: PLC0415

    loads = []
    real_load = loader_module.load_text_encoder
    loader_module.load_text_encoder = lambda *a, **k: loads.append(1) or real_load(*a, **k)

    clip = comfy_nodes.CLIPLoader().load_clip(file_name, "wan", "default")[0]
    from native_host import run_node  # noqa: PLC0415  (beside this file; runs nodes as ComfyUI does)

    pack_nodes = {cls.__name__: cls for cls in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
    encoder = run_node(pack_nodes["WorldWanderTextEncoderLoader"], file_name, "default")[0]
    report = {"comfy_compute_dtypes": sorted(str(d) for d in clip.cond_stage_model.dtypes), "tasks": {}}
    stock_by_text = {}
    for task in TASKS.values():
        rows = {}
        for attempt in ("first", "cached"):
            before = len(loads)
            _, positive, negative = run_node(pack_nodes["WorldWanderTextEncode"], encoder, task.name, "", "")
            rows[attempt] = {"umt5_loads": len(loads) - before, "positive": positive, "negative": negative}
        stock = {}
        for key, text in (("positive", task.prompt), ("negative", "")):
            if text not in stock_by_text:  # ComfyUI's CPU encode is slow; the empty negative is shared
                stock_by_text[text] = comfy_nodes.CLIPTextEncode().encode(clip, text)[0]
            stock[key] = stock_by_text[text]
        figures = {}
        for key in ("positive", "negative"):
            ours, theirs = rows["first"][key], stock[key]
            a, b = ours[0][0].float(), theirs[0][0].float()
            same_shape = tuple(a.shape) == tuple(b.shape)
            figures[key] = {
                "ours_shape": list(a.shape), "stock_shape": list(b.shape), "stock_dtype": str(theirs[0][0].dtype),
                "ours_keys": sorted(ours[0][1]), "stock_keys": sorted(theirs[0][1]),
                "stock_pooled_output_is_none": theirs[0][1].get("pooled_output") is None,
                "entries": [len(ours), len(theirs)],
                "max_abs_diff": float((a - b).abs().max()) if same_shape else None,
                "max_abs_stock": float(b.abs().max()),
                "real_tokens": [int(a[0].abs().amax(-1).gt(0).sum()), int(b[0].abs().amax(-1).gt(0).sum())],
                "cached_equal": bool(torch.equal(rows["cached"][key][0][0], ours[0][0])),
            }
        figures["umt5_loads"] = [rows["first"]["umt5_loads"], rows["cached"]["umt5_loads"]]
        report["tasks"][task.name] = figures
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:6])
