"""Benchmark: one classifier-free-guidance step three ways, in one run with interleaved rounds: ours
batched (sampling.guided_flow with cfg_batch=2: one forward of batch 2), ours sequential (cfg_batch=1:
two forwards of batch 1), and the authors' code path (their CustomWanTransformer3DModel forward on the
conditional prompt, then on the negative one, then the guidance; needs --authors-repo, a checkout of
showlab/WorldWander). Time, peak memory above the weights, and each guided prediction's distance to
the batched one and to the float32 guided prediction of the same weights (in bf16, guidance
amplifies rounding: the three rows are the same computation if they are equally far from float32).

    python -m benchmarks.bench_cfg --model 5b --layers 1 --dtype bf16 --height 256 --width 448 \
        --compact --authors-repo /path/to/WorldWander
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
BATCHED, SEQUENTIAL, AUTHORS = "ours, batched (cfg_batch 2)", "ours, sequential (cfg_batch 1)", \
    "authors' code, two passes"


def run(argv=None) -> dict:
    from wan_egoexo.memory.modulation import enable_compact_modulation
    from wan_egoexo.sampling.sampler import guided_flow

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--compact", action="store_true", help="our rows with compact modulation")
    parser.add_argument("--authors-repo", default=None, help="a checkout of showlab/WorldWander: time its forward")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    device, dtype = common.setup(args)
    transformer = common.build_transformer(args, device, dtype)
    ours = common.twin(transformer)
    if args.compact:
        enable_compact_modulation(ours)
    target, source, reference, cond = common.latent_inputs(args, transformer, 1, device, seed=0)
    uncond = common.latent_inputs(args, transformer, 1, device, seed=1)[3]
    timestep = torch.full((1,), 700.0, device=device)

    def ours_with(cfg_batch):
        def step():
            with torch.no_grad():
                return guided_flow(ours, target, timestep, cond, uncond, source, reference, "collaborative",
                                   GUIDANCE, cfg_batch)
        return step

    fns = {BATCHED: ours_with(2), SEQUENTIAL: ours_with(1)}
    if args.authors_repo:
        from benchmarks.authors_forward import authors_flow, authors_model

        theirs = authors_model(args.authors_repo, transformer, dtype, device)

        def authors():  # their pipeline's loop body: conditional forward, unconditional forward, guidance
            with torch.no_grad():
                flow_cond = authors_flow(theirs, target, timestep, cond, source, reference)
                flow_uncond = authors_flow(theirs, target, timestep, uncond, source, reference)
                return (flow_uncond + GUIDANCE * (flow_cond - flow_uncond)).float()

        fns[AUTHORS] = authors
    exact = common.twin(transformer)
    exact.load_state_dict({k: v.float() for k, v in transformer.state_dict().items()}, strict=True, assign=True)
    with torch.no_grad():
        reference_flow = guided_flow(exact, target, timestep, cond, uncond, source, reference, "collaborative",
                                     GUIDANCE, 2).float().cpu()
    del exact
    times = common.interleaved_times(fns, device, args.warmup, args.rounds)
    memory, outputs = {}, {}
    for name, fn in fns.items():
        with common.peak_memory(device) as memory[name]:
            outputs[name] = fn().float().cpu()
    distance = {name: float((out - outputs[BATCHED]).norm() / outputs[BATCHED].norm()) for name, out in outputs.items()}
    to_fp32 = {name: float((out - reference_flow).norm() / reference_flow.norm()) for name, out in outputs.items()}
    medians = {k: common.median(v) for k, v in times.items()}
    results = {"times_s": times, "median_s": medians, "memory": memory, "relative_l2_vs_batched": distance,
               "relative_l2_vs_fp32": to_fp32,
               "time_vs_batched": {k: medians[k] / medians[BATCHED] for k in fns},
               "time_vs_batched_of_rounds": {k: common.median([a / b for a, b in zip(v, times[BATCHED])])
                                             for k, v in times.items()},
               "memory_vs_batched": {k: memory[k]["delta_bytes"] / max(1, memory[BATCHED]["delta_bytes"])
                                     for k in fns}}
    rows = [[name, f"{medians[name] * 1e3:.1f}", f"{results['time_vs_batched'][name]:.2f}",
             f"{results['time_vs_batched_of_rounds'][name]:.2f}", common.mib(memory[name]["delta_bytes"]),
             f"{results['memory_vs_batched'][name]:.2f}", f"{distance[name]:.1e}", f"{to_fp32[name]:.1e}"]
            for name in fns]
    common.print_table(
        f"CFG step, {args.model} model ({args.layers or 'all'} blocks){' + compact' if args.compact else ''}, "
        f"{args.task} {args.height}x{args.width}x{args.frames}, {device}/{str(dtype).replace('torch.', '')}, "
        f"median of {args.rounds} interleaved rounds",
        ["CFG", "median ms", "time / batched", "per round", "peak +MiB", "memory / batched", "rel L2 vs batched",
         "rel L2 vs fp32"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    """Exit 1 when a row is not the same computation: farther from float32 than batched (x1.5, bf16)."""
    results = run(argv)
    to_fp32 = results["relative_l2_vs_fp32"]
    return 0 if max(to_fp32.values()) <= 1.5 * to_fp32[BATCHED] + 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
