"""Benchmark: one in-context forward (a CFG step's batch of 2 by default) through every implementation
at hand, in one run with interleaved rounds: a bare diffusers forward over the same tokens and
per-token timesteps (the baseline), predict_flow with diffusers' per-token modulation, predict_flow
with compact modulation as it was at an earlier revision (--before-rev) and as it is now, and
ComfyUI's own Wan forward (--comfyui). Each row: time, ratio to the bare forward (of medians and the
median of per-round ratios), peak memory above the weights, and the relative L2 distance of its output
to the float32 forward of the same weights (positions are "uniform", ComfyUI's layout, for all rows).

    python -m benchmarks.bench_forward --model 5b --layers 1 --dtype bf16 --height 256 --width 448 \
        --before-rev 5b4fa74 --comfyui ../shared/comfyui/ComfyUI-0.3.64
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_forward"


def _fp32_reference(transformer, inputs, timestep):
    from wan_egoexo.in_context.predict_flow import predict_flow

    exact = common.twin(transformer)
    exact.load_state_dict({k: v.float() for k, v in transformer.state_dict().items()}, strict=True, assign=True)
    with torch.no_grad():
        out = predict_flow(exact, inputs[0], timestep, inputs[3], inputs[1], inputs[2], positions="uniform")
    return out.float().cpu()


def variants(args, transformer, inputs, timestep, dtype, device):
    """name -> zero-argument function computing the target's flow, in the table's order."""
    from wan_egoexo.in_context.predict_flow import predict_flow
    from wan_egoexo.memory.modulation import enable_compact_modulation

    target, source, reference, text = inputs
    parts = ([reference] if reference is not None else []) + [source, target]
    hidden = torch.cat(parts, dim=2).to(dtype)
    patch = transformer.config.patch_size
    per_frame = (target.shape[3] // patch[1]) * (target.shape[4] // patch[2])
    clean = (hidden.shape[2] - target.shape[2]) // patch[0] * per_frame
    noisy = target.shape[2] // patch[0] * per_frame
    per_token = torch.cat([torch.zeros(args.batch, clean, device=device),
                           timestep[:, None].expand(args.batch, noisy)], dim=1)
    text_in = text.to(dtype)
    frames = target.shape[2]

    def flow_of(model):
        def run():
            with torch.no_grad():
                return predict_flow(model, target, timestep, text, source, reference, positions="uniform")
        return run

    def bare():
        with torch.no_grad():
            return transformer(hidden_states=hidden, timestep=per_token, encoder_hidden_states=text_in,
                               return_dict=False)[0][:, :, -frames:]

    found = {"bare diffusers forward": bare, "predict_flow, diffusers modulation": flow_of(transformer)}
    if args.before_rev:
        from benchmarks.before_code import module_at_revision

        before = common.twin(transformer)
        module_at_revision(args.before_rev, "wan_egoexo.memory.modulation").enable_compact_modulation(before)
        found[f"predict_flow + compact ({args.before_rev})"] = flow_of(before)
    compact = common.twin(transformer)
    enable_compact_modulation(compact)
    found["predict_flow + compact (now)"] = flow_of(compact)
    if args.comfyui:
        from benchmarks.comfy_forward import comfy_in_context_flow, comfy_wan_model, copy_comfyui

        comfy = comfy_wan_model(copy_comfyui(args.comfyui), transformer, dtype, device)

        def comfyui():
            with torch.no_grad():
                return comfy_in_context_flow(comfy, target, timestep, text, source, reference)

        found["ComfyUI 0.3.64 forward"] = comfyui
    return found


def run(argv=None) -> dict:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2, help="2 = one CFG step (conditional + unconditional)")
    parser.add_argument("--before-rev", default=None, help="also time compact modulation as of this git revision")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH") or None,
                        help="a ComfyUI folder: also time its Wan forward (default: $COMFYUI_PATH)")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    device, dtype = common.setup(args)
    transformer = common.build_transformer(args, device, dtype)
    inputs = common.latent_inputs(args, transformer, args.batch, device)
    timestep = torch.full((args.batch,), 700.0, device=device)
    reference = _fp32_reference(transformer, inputs, timestep)
    fns = variants(args, transformer, inputs, timestep, dtype, device)
    times = common.interleaved_times(fns, device, args.warmup, args.rounds)
    memory, distance = {}, {}
    for name, fn in fns.items():
        with common.peak_memory(device) as memory[name]:
            out = fn()
        distance[name] = float((out.float().cpu() - reference).norm() / reference.norm())
        del out
    base = "bare diffusers forward"
    medians = {k: common.median(v) for k, v in times.items()}
    results = {"times_s": times, "median_s": medians, "memory": memory, "relative_l2_vs_fp32": distance,
               "ratio": {k: medians[k] / medians[base] for k in times},
               "ratio_of_rounds": {k: common.median([a / b for a, b in zip(v, times[base])]) for k, v in times.items()}}
    rows = [[name, f"{medians[name] * 1e3:.1f}", f"{results['ratio'][name]:.3f}",
             f"{results['ratio_of_rounds'][name]:.3f}", common.mib(memory[name]["delta_bytes"]),
             f"{distance[name]:.2e}"] for name in fns]
    common.print_table(
        f"in-context forward, {args.model} model ({args.layers or 'all'} blocks), {args.task} "
        f"{args.height}x{args.width}x{args.frames}, batch {args.batch}, {device}/{str(dtype).replace('torch.', '')}, "
        f"median of {args.rounds} interleaved rounds",
        ["forward", "median ms", "/ bare", "/ bare per round", "peak +MiB", "rel L2 vs fp32"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
