"""Benchmark: a LoRA merged into the weights against the same LoRA as an unfused PEFT adapter, in one
run with interleaved rounds: forward time (compact modulation on both), the distance between the two
outputs, and what a chain change costs in merged mode (restoring the touched weights from the model
file, bit-exact, then merging the new chain). The transformer is written to a temporary single file
and loaded from it, as users load it, so the restore reads a real file.

    python -m benchmarks.bench_lora --model 5b --layers 1 --dtype bf16 --height 256 --width 448 --rank 80
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_lora"


def run(argv=None) -> dict:
    from wan_egoexo.in_context.predict_flow import predict_flow
    from wan_egoexo.lora import apply_lora, set_merged_loras
    from wan_egoexo.memory.modulation import enable_compact_modulation
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
    from wan_egoexo.tiny.transformer import save_transformer_single_file
    from wan_egoexo.models.transformer_loader import load_transformer

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rank", type=int, default=80, help="LoRA rank (WorldWander: 80 on ten linears per block)")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    if args.fast:
        args.rank = 4
    device, dtype = common.setup(args)
    with tempfile.TemporaryDirectory() as work:
        base = common.build_transformer(args, "cpu", torch.float32)
        path = Path(work) / "transformer.safetensors"
        save_transformer_single_file(base, path, dtype=torch.float16)  # the released file is fp16
        lora = save_worldwander_ckpt(random_lora_state_dict(base, rank=args.rank, seed=1), Path(work) / "lora.ckpt")
        del base
        merged = load_transformer(path, device, dtype)
        unfused = load_transformer(path, device, dtype)
        for model in (merged, unfused):
            enable_compact_modulation(model)
        start = time.perf_counter()
        set_merged_loras(merged, [(lora, 1.0)])
        first_merge_s = time.perf_counter() - start
        apply_lora(unfused, lora, strength=1.0)
        target, source, reference, text = common.latent_inputs(args, merged, args.batch, device)
        timestep = torch.full((args.batch,), 700.0, device=device)

        def forward(model):
            def step():
                with torch.no_grad():
                    return predict_flow(model, target, timestep, text, source, reference)
            return step

        fns = {"merged": forward(merged), "unfused (PEFT adapter)": forward(unfused)}
        times = common.interleaved_times(fns, device, args.warmup, args.rounds)
        memory, outputs = {}, {}
        for name, fn in fns.items():
            with common.peak_memory(device) as memory[name]:
                outputs[name] = fn().float().cpu()
        changes = []
        for strength in (0.5, 1.0) * max(1, args.rounds // 2):  # a chain change: restore from the file, merge
            common.synchronize(device)
            start = time.perf_counter()
            set_merged_loras(merged, [(lora, strength)])
            common.synchronize(device)
            changes.append(time.perf_counter() - start)
    a, b = outputs.values()
    medians = {k: common.median(v) for k, v in times.items()}
    results = {"times_s": times, "median_s": medians, "memory": memory,
               "unfused_over_merged": medians["unfused (PEFT adapter)"] / medians["merged"],
               "unfused_over_merged_of_rounds": common.median(
                   [u / m for u, m in zip(times["unfused (PEFT adapter)"], times["merged"])]),
               "relative_l2_between": float((a - b).norm() / b.norm()), "first_merge_s": first_merge_s,
               "chain_change_s": changes, "rank": args.rank}
    rows = [[name, f"{medians[name] * 1e3:.1f}", f"{medians[name] / medians['merged']:.3f}",
             common.mib(memory[name]["delta_bytes"])] for name in fns]
    common.print_table(
        f"LoRA rank {args.rank}, {args.model} model ({args.layers or 'all'} blocks), {args.task} "
        f"{args.height}x{args.width}x{args.frames}, batch {args.batch}, {device}/{str(dtype).replace('torch.', '')}, "
        f"median of {args.rounds} interleaved rounds; unfused / merged per round "
        f"{results['unfused_over_merged_of_rounds']:.3f}; rel L2 between {results['relative_l2_between']:.1e}; "
        f"first merge {first_merge_s:.2f} s, chain change (restore + merge) median {common.median(changes):.2f} s",
        ["LoRA", "median ms", "time / merged", "peak +MiB"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    results = run(argv)
    return 0 if results["relative_l2_between"] < 2e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
