"""Benchmark: the memory model (wan_egoexo.memory.footprint) against measured peaks: one predict_flow
call per size and modulation, its peak memory above the weights next to the model's estimate and
their ratio. The planner (--memory auto, the Sampler's auto) trusts these estimates.

    python -m benchmarks.bench_memory_model --model 5b --layers 1 --dtype bf16 --sizes 256x448x9,448x768x9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_memory_model"


def measure(args, size: str, compact: bool, device, dtype) -> dict:
    from wan_egoexo.in_context.predict_flow import predict_flow
    from wan_egoexo.in_context.latents import latent_shape
    from wan_egoexo.memory.flops import in_context_tokens
    from wan_egoexo.memory.footprint import predict_flow_activation_bytes
    from wan_egoexo.memory.modulation import enable_compact_modulation

    height, width, frames = (int(v) for v in size.split("x"))
    run_args = argparse.Namespace(**{**vars(args), "height": height, "width": width, "frames": frames})
    transformer = common.build_transformer(run_args, device, dtype)
    if compact:
        enable_compact_modulation(transformer)
    target, source, reference, text = common.latent_inputs(run_args, transformer, args.batch, device)
    timestep = torch.full((args.batch,), 700.0, device=device)
    with torch.no_grad():
        predict_flow(transformer, target, timestep, text, source, reference)  # first call: lazy allocations
        with common.peak_memory(device) as memory:
            predict_flow(transformer, target, timestep, text, source, reference)
    config = dict(transformer.config)
    tokens = in_context_tokens(config, *latent_shape(frames, height, width), args.task == "ego2exo")
    estimate = predict_flow_activation_bytes(config, tokens, args.batch, dtype, compact).peak
    return {"size": size, "modulation": "compact" if compact else "diffusers", "tokens": tokens,
            "memory": memory, "model_bytes": estimate, "ratio": estimate / max(1, memory["delta_bytes"])}


def run(argv=None) -> list[dict]:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2, help="2 = one CFG step; 1 = sequential CFG")
    parser.add_argument("--sizes", default="128x256x9", help="comma-separated HxWxF")
    parser.add_argument("--modulation", default="compact,diffusers", help="compact, diffusers or both")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    if args.fast:
        args.sizes = "32x64x5,64x96x9"
    device, dtype = common.setup(args)
    results = [measure(args, size, kind == "compact", device, dtype)
               for size in args.sizes.split(",") for kind in args.modulation.split(",")]
    rows = [[r["size"], r["tokens"], r["modulation"], common.mib(r["memory"]["delta_bytes"]),
             common.mib(r["model_bytes"]), f"{r['ratio']:.3f}"] for r in results]
    common.print_table(
        f"memory model vs measured peak, {args.model} model ({args.layers or 'all'} blocks), {args.task}, batch "
        f"{args.batch}, {device}/{str(dtype).replace('torch.', '')}",
        ["size", "tokens/sample", "modulation", "measured +MiB", "model +MiB", "model / measured"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
