"""The prepared GPU check (run by benchmarks/gpu_check.sh): the real Wan2.2-TI2V-5B architecture with
random weights in bf16, at the reference size (704x1280x49 exo -> ego, 22,880 tokens per sample), on
one GPU, within a time budget (default 540 s; each section is skipped once the budget is spent, and
the figures gathered so far are written after every section). It measures:

- one forward: diffusers' per-token modulation against compact modulation (time, peak memory);
- seconds per sampling step with classifier-free guidance, batched (cfg_batch 2) and sequential (1);
- the attention kernels installed (PyTorch SDPA, flash-attention 2, flash-attention 3): step time
  and distance to SDPA's output;
- each memory plan's step time and peak memory (weights included) next to the memory model's
  estimate: everything resident, sequential guidance, the resident block counts the planner picks
  for 24, 16 and 12 GiB cards, every block streamed, fp8 weights, fp8 with streaming.

    bash benchmarks/gpu_check.sh                  # on the GPU machine; writes benchmarks/results/gpu/
    python -m benchmarks.gpu_check --dry-run --out /tmp/gpu_check.json   # tiny model on the CPU, seconds

--dry-run runs every section on the tiny random model at 64x96x9 on the CPU (offloading copies
synchronously there), so the script is exercised by the fast tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "gpu_check"
PLAN_BUDGETS_GIB = (24, 16, 12)


class Check:
    """Sections run in order until the deadline; the record is rewritten after each one."""

    def __init__(self, args, device):
        self.args, self.device = args, device
        self.deadline = time.monotonic() + args.budget_s
        self.record = {"benchmark": NAME, "command": common.command_line(NAME, None),
                       "arguments": {k: str(v) for k, v in vars(args).items()},
                       "environment": common.environment(device), "sections": {}, "skipped": []}

    def section(self, name, fn):
        if time.monotonic() > self.deadline:
            self.record["skipped"].append(name)
            print(f"[{name}] skipped: time budget spent", flush=True)
        else:
            start = time.monotonic()
            try:
                self.record["sections"][name] = fn()
            except Exception as exc:  # one failing section (a missing kernel, OOM) must not hide the others
                self.record["sections"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            self.record["sections"][name]["seconds_spent"] = time.monotonic() - start
            print(f"[{name}] {json.dumps(self.record['sections'][name], default=str)[:600]}", flush=True)
        self.write()

    def write(self):
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.record, indent=2, default=str))


def build(args, device, dtype):
    model_args = argparse.Namespace(model="tiny" if args.dry_run else "5b", layers=None)
    return common.build_transformer(model_args, device, dtype)


def inputs(args, transformer, device):
    from wan_egoexo.in_context.latents import latent_shape

    frames, height, width = latent_shape(args.frames, args.height, args.width)
    generator = torch.Generator().manual_seed(0)

    def noise(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    return {"target": noise(1, 48, frames, height, width), "source": noise(1, 48, frames, height, width),
            "cond": noise(1, 512, transformer.config.text_dim), "uncond": noise(1, 512, transformer.config.text_dim),
            "timestep": torch.full((1,), 700.0, device=device), "grid": (frames, height, width)}


def guided_step(model, x, cfg_batch):
    from wan_egoexo.sampling.sampler import guided_flow

    def step():
        with torch.no_grad():
            return guided_flow(model, x["target"], x["timestep"], x["cond"], x["uncond"], x["source"], None,
                               "collaborative", 5.0, cfg_batch)
    return step


def timed(fn, args, device) -> dict:
    """Median seconds of ``fn`` and its peak device memory (weights included on CUDA)."""
    times = common.interleaved_times({"fn": fn}, device, args.warmup, args.rounds)["fn"]
    common.synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        common.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with common.peak_memory(device) as memory:
            fn()
        peak = memory["peak_bytes"]
    return {"median_s": common.median(times), "times_s": times, "peak_bytes": peak}


def distance(a, b) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def estimate(transformer, x, cfg_batch, resident=None, fp8=False, compact=True) -> int:
    """The memory model's bytes for this step: the transformer's device share and one forward."""
    from wan_egoexo.memory.flops import in_context_tokens
    from wan_egoexo.memory.footprint import sampling_bytes

    config = dict(transformer.config)
    tokens = in_context_tokens(config, *x["grid"], False)
    return sampling_bytes(tokens, cfg_batch, torch.bfloat16, fp8=fp8, resident_blocks=resident,
                          compact_modulation=compact, config=config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu/gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU: checks the script, not the GPU")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting sections after this long")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    args.height, args.width, args.frames = (64, 96, 9) if args.dry_run else (704, 1280, 49)
    if args.dry_run:
        args.warmup, args.rounds = 0, 1
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --dry-run to check the script on the CPU.")
    dtype = torch.bfloat16
    check = Check(args, device)
    transformer = build(args, device, dtype)
    compact = transformer  # compact modulation is switched on in the first section, then stays on
    x = inputs(args, transformer, device)
    outputs = {}

    def modulation():
        from wan_egoexo.memory.modulation import enable_compact_modulation

        found = {}
        for name in ("diffusers", "compact"):
            if name == "compact":
                enable_compact_modulation(transformer)
            step = guided_step(transformer, x, 2)
            found[name] = {**timed(step, args, device), "model_bytes": estimate(transformer, x, 2,
                                                                                compact=name == "compact")}
            outputs[name] = step()
        found["compact_vs_diffusers_time"] = found["compact"]["median_s"] / found["diffusers"]["median_s"]
        found["relative_l2_compact_vs_diffusers"] = distance(outputs["compact"], outputs["diffusers"])
        return found

    def cfg():
        found = {}
        for batch in (2, 1):
            found[f"cfg_batch {batch}"] = {**timed(guided_step(compact, x, batch), args, device),
                                           "model_bytes": estimate(transformer, x, batch)}
        found["sequential_vs_batched_time"] = found["cfg_batch 1"]["median_s"] / found["cfg_batch 2"]["median_s"]
        return found

    def attention():
        from wan_egoexo.memory.attention_choice import SDPA, available_attention_backends
        from wan_egoexo.models.transformer_loader import set_attention_backend

        found = {"available": available_attention_backends(device, dtype)}
        step = guided_step(compact, x, 2)
        found[SDPA] = timed(step, args, device)
        baseline = step()
        for backend in found["available"]:
            if backend != SDPA:
                set_attention_backend(compact, backend)
                found[backend] = {**timed(step, args, device), "relative_l2_vs_sdpa": distance(step(), baseline)}
                compact.reset_attention_backend()
        return found

    def plans():
        from wan_egoexo.memory.auto import choose_sampling_plan
        from wan_egoexo.memory.offload import disable_block_offload, enable_block_offload

        layers = len(transformer.blocks)
        runs = [("resident, batched", 2, None), ("resident, sequential", 1, None)]
        for gib in PLAN_BUDGETS_GIB:
            if args.dry_run:
                plan_batch, resident = 1, layers // 2
            else:
                plan = choose_sampling_plan(*x["grid"], False, device=device, budget_bytes=gib * 2**30)
                plan_batch, resident = plan.cfg_batch, plan.resident_blocks
            runs.append((f"planned for {gib} GiB", plan_batch, resident))
        runs.append(("every block streamed", 1, 0))
        found = {}
        for name, batch, resident in runs:
            if resident is not None:
                enable_block_offload(compact, device, resident)
            found[name] = {**timed(guided_step(compact, x, batch), args, device), "cfg_batch": batch,
                           "resident_blocks": resident, "model_bytes": estimate(transformer, x, batch, resident)}
            if resident is not None:
                disable_block_offload(compact, device)
        return found

    def fp8():
        from wan_egoexo.memory.fp8_weights import enable_fp8_storage
        from wan_egoexo.memory.offload import disable_block_offload, enable_block_offload

        reference = outputs.get("compact")
        if reference is None:
            reference = guided_step(compact, x, 2)()
        enable_fp8_storage(compact, compute_dtype=dtype)
        step = guided_step(compact, x, 1)
        found = {"fp8, sequential": {**timed(step, args, device), "relative_l2_vs_bf16": distance(step(), reference),
                                     "model_bytes": estimate(transformer, x, 1, fp8=True)}}
        enable_block_offload(compact, device, 0)
        found["fp8, every block streamed"] = {**timed(step, args, device),
                                              "model_bytes": estimate(transformer, x, 1, 0, fp8=True)}
        disable_block_offload(compact, device)
        return found

    for name, fn in (("modulation", modulation), ("cfg", cfg), ("attention", attention), ("plans", plans),
                     ("fp8", fp8)):
        check.section(name, fn)
    print(f"\nwrote {args.out}" + (f" (skipped: {', '.join(check.record['skipped'])})" if check.record["skipped"]
                                  else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
