"""Benchmark: the overhead of our in-context forward (predict_flow: concatenating the parts, the
per-token timesteps, the collaborative rotary tables swapped in by a hook, cutting the output)
against a bare diffusers WanTransformer3DModel forward over the same concatenated tokens with
the same per-token timesteps, measured in one run with interleaved rounds. Goal: <= 1.05x.

    python -m benchmarks.bench_overhead
    python -m benchmarks.bench_overhead --model 5b --device cuda --height 704 --width 1280 --frames 49

A second row compares predict_flow with compact modulation against the same bare forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_overhead"
GOAL = 1.05


def run(argv=None) -> dict:
    from wan_egoexo.in_context import predict_flow
    from wan_egoexo.memory.modulation import enable_compact_modulation

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args(argv)
    common.apply_fast(args)
    if not args.fast:
        args.rounds = max(args.rounds, 9)
    device, dtype = common.setup(args)
    transformer = common.build_transformer(args, device, dtype)
    target, source, reference, text = common.latent_inputs(args, transformer, args.batch, device)
    timestep = torch.full((args.batch,), 700.0, device=device)

    # The bare forward's inputs, built once outside the timed region: exactly predict_flow's sequence.
    parts = ([reference] if reference is not None else []) + [source, target]
    hidden = torch.cat(parts, dim=2).to(dtype)
    patch = transformer.config.patch_size
    per_frame = (target.shape[3] // patch[1]) * (target.shape[4] // patch[2])
    clean = (hidden.shape[2] - target.shape[2]) // patch[0] * per_frame
    noisy = target.shape[2] // patch[0] * per_frame
    per_token = torch.cat([torch.zeros(args.batch, clean, device=device),
                           timestep[:, None].expand(args.batch, noisy)], dim=1)
    text_in = text.to(dtype)

    def bare():
        with torch.no_grad():
            return transformer(hidden_states=hidden, timestep=per_token, encoder_hidden_states=text_in,
                               return_dict=False)[0]

    def ours():
        with torch.no_grad():
            return predict_flow(transformer, target, timestep, text, source, reference)

    compact = common.twin(transformer)
    enable_compact_modulation(compact)

    def ours_compact():
        with torch.no_grad():
            return predict_flow(compact, target, timestep, text, source, reference)

    times = common.interleaved_times({"bare": bare, "predict_flow": ours, "predict_flow+compact": ours_compact},
                                     device, args.warmup, args.rounds)
    bare_s = common.median(times["bare"])
    results = {"times_s": times, "median_s": {k: common.median(v) for k, v in times.items()}, "goal": GOAL,
               "ratio": {k: common.median(v) / bare_s for k, v in times.items() if k != "bare"},
               # per-round ratios: each round ran the variants back to back, so these cancel slow drift
               "ratio_of_rounds": {k: common.median([a / b for a, b in zip(v, times["bare"])])
                                   for k, v in times.items() if k != "bare"}}
    rows = [["bare diffusers forward", f"{bare_s * 1e3:.2f}", "1.000", "-"]]
    for key in ("predict_flow", "predict_flow+compact"):
        rows.append([key, f"{results['median_s'][key] * 1e3:.2f}", f"{results['ratio'][key]:.3f}",
                     f"{results['ratio_of_rounds'][key]:.3f}"])
    common.print_table(
        f"in-context overhead, {args.model} model, {args.task} {args.height}x{args.width}x{args.frames}, batch "
        f"{args.batch}, {device}/{str(dtype).replace('torch.', '')}, median of {args.rounds} interleaved rounds "
        f"(goal <= {GOAL}x)",
        ["forward", "median ms", "ratio", "median per-round ratio"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
