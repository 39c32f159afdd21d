"""Benchmark: one predict_flow step per memory/speed configuration, with its time, peak memory next
to the memory model's estimate, FLOP count (wan_egoexo.memory.flops), achieved FLOP/s and its
output's distance to a reference: the default configuration in float32, the float32 forward of the
same weights in bf16 (so exact options are judged by how close to float32 they stay).

    python -m benchmarks.bench_predict_flow                       # tiny model on the CPU
    python -m benchmarks.bench_predict_flow --model 5b --device cuda --height 704 --width 1280 \
        --frames 49 --configs default,compact,fp8,compact+fp8,compact+offload,flash2,flash3

Configurations are "+"-joined options: compact (compact modulation), fp8 (fp8 weight storage),
offload (block offloading, --resident blocks kept; synchronous copies on the CPU), compile
(torch.compile of the blocks), flash2 / flash3 (flash-attention backends; "unavailable" when not
installed or not supported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_predict_flow"
OPTIONS = ("compact", "fp8", "offload", "compile", "flash2", "flash3")
# Allowed relative L2 distance to the reference: fp8 storage and other attention kernels; exact options
# may be at most EXACT_FACTOR times as far from the float32 forward as the default bf16 forward is.
TOLERANCE = {"exact": 1e-4, "fp8": 0.05, "attention_bf16": 0.02}
EXACT_FACTOR = 1.25


def parse_config(name: str) -> list[str]:
    parts = [] if name == "default" else name.split("+")
    unknown = [p for p in parts if p not in OPTIONS]
    if unknown:
        raise SystemExit(f"--configs: unknown option(s) {unknown} in {name!r}; expected 'default' or "
                         f"'+'-joined {OPTIONS}.")
    return parts


def tolerance_for(parts: list[str], default_distance: float) -> float:
    if "fp8" in parts:
        return TOLERANCE["fp8"]
    if "flash2" in parts or "flash3" in parts:
        return TOLERANCE["attention_bf16"]
    return max(TOLERANCE["exact"], EXACT_FACTOR * default_distance)


def prepare(parts, args, device, dtype):
    """A fresh transformer (same seed, same weights) with the options applied in the documented order;
    returns (transformer, None) or (None, reason) when an option is unavailable here."""
    from wan_egoexo.memory.attention_choice import FLASH_2, FLASH_3, available_attention_backends
    from wan_egoexo.memory.compile import compile_blocks
    from wan_egoexo.memory.fp8_weights import enable_fp8_storage
    from wan_egoexo.memory.modulation import enable_compact_modulation
    from wan_egoexo.memory.offload import enable_block_offload
    from wan_egoexo.models.transformer_loader import set_attention_backend

    backend = FLASH_2 if "flash2" in parts else FLASH_3 if "flash3" in parts else None
    if backend and backend not in available_attention_backends(device, dtype):
        return None, f"{backend} unavailable on {device}/{dtype}"
    transformer = common.build_transformer(args, "cpu" if "offload" in parts else device, dtype)
    layers = len(transformer.blocks)
    if "compact" in parts:
        enable_compact_modulation(transformer)
    if "fp8" in parts:
        enable_fp8_storage(transformer, compute_dtype=dtype)
    if backend:
        set_attention_backend(transformer, backend)
    if "offload" in parts:
        enable_block_offload(transformer, device, min(args.resident, layers))
    if "compile" in parts:
        compile_blocks(transformer)
    return transformer, None


def measure(parts, args, device, dtype, predict_flow):
    """(step times, peak memory, output on the CPU) of one configuration, or the reason it is unavailable."""
    transformer, reason = prepare(parts, args, device, dtype)
    if transformer is None:
        return reason
    target, source, reference, text = common.latent_inputs(args, transformer, args.batch, device)
    timestep = torch.full((args.batch,), 700.0, device=device)

    def step():
        with torch.no_grad():
            return predict_flow(transformer, target, timestep, text, source, reference)

    times = common.interleaved_times({"step": step}, device, args.warmup, args.rounds)["step"]
    with common.peak_memory(device) as memory:
        output = step().float().cpu()
    return times, memory, output


def float32_reference(args, device, predict_flow):
    """The float32 forward of the same weights (build_transformer's seed), on the same inputs."""
    transformer = common.build_transformer(args, device, torch.float32)
    target, source, reference, text = common.latent_inputs(args, transformer, args.batch, device)
    with torch.no_grad():
        return predict_flow(transformer, target, torch.full((args.batch,), 700.0, device=device), text, source,
                            reference).float().cpu()


def run(argv=None) -> list[dict]:
    from wan_egoexo.in_context.predict_flow import predict_flow
    from wan_egoexo.in_context.latents import latent_shape
    from wan_egoexo.memory.flops import predict_flow_flops
    from wan_egoexo.memory.footprint import predict_flow_activation_bytes

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2, help="2 = one CFG step (conditional + unconditional)")
    parser.add_argument("--configs", default=None, help="comma-separated, e.g. default,compact,fp8,compact+fp8")
    parser.add_argument("--resident", type=int, default=0, help="offload: blocks kept on the device")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    device, dtype = common.setup(args)
    if args.configs is None:
        args.configs = "default,compact,fp8,compact+fp8" if args.fast else \
            "default,compact,fp8,compact+fp8,compact+offload" + (",flash2,flash3" if device.type == "cuda" else "")
    names = args.configs.split(",")
    if names[0] != "default":
        names.insert(0, "default")  # the reference every other row is compared with
    frames, height, width = latent_shape(args.frames, args.height, args.width)
    has_reference = args.task == "ego2exo"

    results = []
    reference_output = None if dtype == torch.float32 else float32_reference(args, device, predict_flow)
    default_distance = 0.0
    for name in names:
        parts = parse_config(name)
        try:
            measured = measure(parts, args, device, dtype, predict_flow)
        except Exception as exc:  # one failing option (e.g. a missing kernel) must not hide the other rows
            if name == "default":
                raise
            results.append({"config": name, "status": f"error: {type(exc).__name__}: {str(exc)[:200]}"})
            continue
        if isinstance(measured, str):
            results.append({"config": name, "status": measured})
            continue
        times, memory, output = measured
        if reference_output is None:
            reference_output = output
        distance = float((output - reference_output).norm() / reference_output.norm())
        if name == "default":
            default_distance = distance
        flops = predict_flow_flops(common_config(args), frames, height, width, has_reference, args.batch,
                                   timestep_rows=2 if "compact" in parts else None)
        seconds = common.median(times)
        estimate = predict_flow_activation_bytes(common_config(args), flops.tokens, args.batch, dtype,
                                                 compact_modulation="compact" in parts)
        results.append({
            "config": name, "status": "ok" if distance <= tolerance_for(parts, default_distance) else "MISMATCH",
            "median_s": seconds, "min_s": min(times), "times_s": times, "memory": memory,
            "flops": flops.as_dict(), "flop_per_s": flops.total / seconds,
            "relative_l2_vs_reference": distance, "reference": "default" if dtype == torch.float32 else "float32",
            "tolerance": tolerance_for(parts, default_distance),
            "activation_model_bytes": estimate.peak,
        })

    rows = []
    for r in results:
        if "median_s" not in r:
            rows.append([r["config"], "-", "-", "-", "-", "-", "-", "-", r["status"]])
            continue
        rows.append([r["config"], f"{r['median_s'] * 1e3:.1f}", f"{r['min_s'] * 1e3:.1f}",
                     common.mib(r["memory"]["delta_bytes"]), common.mib(r["activation_model_bytes"]),
                     f"{r['flops']['total'] / 1e9:.2f}",
                     f"{r['flop_per_s'] / 1e9:.2f}", f"{r['relative_l2_vs_reference']:.1e}", r["status"]])
    common.print_table(
        f"predict_flow step, {args.model} model, {args.task} {args.height}x{args.width}x{args.frames}, batch "
        f"{args.batch}, {device}/{str(dtype).replace('torch.', '')}, median of {args.rounds}",
        ["config", "median ms", "min ms", "peak +MiB", "model +MiB", "GFLOP", "GFLOP/s",
         "rel L2 vs " + ("default" if dtype == torch.float32 else "fp32"), "status"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def common_config(args) -> dict:
    from wan_egoexo.memory.flops import WAN22_5B_CONFIG
    from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG

    config = dict(TINY_TRANSFORMER_CONFIG if args.model == "tiny" else WAN22_5B_CONFIG)
    if args.layers:
        config["num_layers"] = args.layers
    return config


def main(argv=None) -> int:
    results = run(argv)
    return 1 if any(r["status"] == "MISMATCH" or r["status"].startswith("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
