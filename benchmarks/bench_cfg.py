"""Benchmark: classifier-free guidance the authors' way (two sequential passes, conditional then
unconditional, batch 1 each) against ours (sampling.guided_flow: one batched pass of batch 2),
in one run with interleaved rounds; time, peak memory, and the distance between the two guided
predictions (the same computation, so it should be at rounding level).

    python -m benchmarks.bench_cfg
    python -m benchmarks.bench_cfg --model 5b --device cuda --height 704 --width 1280 --frames 49
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_cfg"
GUIDANCE = 5.0


def run(argv=None) -> dict:
    from wan_egoexo.in_context import predict_flow
    from wan_egoexo.memory.modulation import enable_compact_modulation
    from wan_egoexo.sampling import guided_flow

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--compact", action="store_true", help="with compact modulation")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    device, dtype = common.setup(args)
    transformer = common.build_transformer(args, device, dtype)
    if args.compact:
        enable_compact_modulation(transformer)
    target, source, reference, cond = common.latent_inputs(args, transformer, 1, device, seed=0)
    uncond = common.latent_inputs(args, transformer, 1, device, seed=1)[3]
    timestep = torch.full((1,), 700.0, device=device)

    def guide(flow_cond, flow_uncond):
        return flow_uncond + GUIDANCE * (flow_cond - flow_uncond)

    def sequential():
        with torch.no_grad():
            flow_cond = predict_flow(transformer, target, timestep, cond, source, reference).float()
            flow_uncond = predict_flow(transformer, target, timestep, uncond, source, reference).float()
        return guide(flow_cond, flow_uncond)

    def batched():  # the sampler's own guided step: one forward on the stacked conditional/unconditional batch
        with torch.no_grad():
            return guided_flow(transformer, target, timestep, cond, uncond, source, reference, "collaborative",
                               GUIDANCE)

    times = common.interleaved_times({"sequential (authors)": sequential, "batched (ours)": batched}, device,
                                     args.warmup, args.rounds)
    memory, outputs = {}, {}
    for name, fn in (("sequential (authors)", sequential), ("batched (ours)", batched)):
        with common.peak_memory(device) as memory[name]:
            outputs[name] = fn().cpu()
    a, b = outputs.values()
    distance = float((a - b).norm() / a.norm())
    seq_s, bat_s = (common.median(v) for v in times.values())
    results = {"times_s": times, "median_s": {k: common.median(v) for k, v in times.items()}, "memory": memory,
               "speedup_batched": seq_s / bat_s,
               "speedup_of_rounds": common.median([s / t for s, t in zip(*times.values())]),
               "relative_l2_between": distance}
    rows = [[name, f"{common.median(times[name]) * 1e3:.2f}", common.mib(memory[name]["delta_bytes"])]
            for name in times]
    common.print_table(
        f"CFG step, {args.model} model{' + compact' if args.compact else ''}, {args.task} "
        f"{args.height}x{args.width}x{args.frames}, {device}/{str(dtype).replace('torch.', '')}, median of "
        f"{args.rounds} interleaved rounds; batched speed-up {results['speedup_batched']:.2f}x "
        f"(per-round {results['speedup_of_rounds']:.2f}x), rel L2 between {distance:.1e}",
        ["CFG", "median ms", "peak +MiB"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    results = run(argv)
    return 0 if results["relative_l2_between"] < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
