"""Benchmark: one end-to-end translation split into stages (read, text, load, encode, sample,
decode, write), with the time and peak memory of each stage (CPU peak RSS; on a GPU also
torch.cuda.max_memory_allocated), with the memory options applied as the CLI will apply them.

    python -m benchmarks.bench_translate                                   # tiny models, CPU
    python -m benchmarks.bench_translate --prompt-cache /tmp/pc --runs 2   # 2nd run never loads UMT5
    python -m benchmarks.bench_translate --models-dir ~/ComfyUI/models --device cuda \
        --width 1280 --height 704 --frames 49 --steps 50 --compact --vae-tiling

Without --models-dir the tiny random models are written to a temporary ComfyUI-style folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_translate"
STAGES = ("read", "text", "load", "encode", "sample", "decode", "write")


def parse(argv):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--models-dir", type=Path, default=None, help="a ComfyUI models folder (real files)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="translate this many times (prompt cache: 2)")
    parser.add_argument("--prompt-cache", type=Path, default=None, help="prompt embedding cache folder")
    parser.add_argument("--text-encoder-device", default=None, help="run UMT5 here (e.g. cpu)")
    parser.add_argument("--compact", action="store_true", help="compact modulation")
    parser.add_argument("--vae-tiling", action="store_true")
    parser.add_argument("--fp8", action="store_true", help="fp8 transformer weight storage")
    parser.add_argument("--offload", action="store_true", help="block offloading (--resident blocks kept)")
    parser.add_argument("--resident", type=int, default=0, help="with --offload: blocks kept on the device")
    parser.add_argument("--cfg-batch", type=int, choices=(1, 2), default=2, help="1 = sequential guidance")
    parser.add_argument("--unfused", action="store_true", help="LoRA as a PEFT adapter instead of merged")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    if args.fast:
        args.steps, args.width, args.height, args.frames = 2, 64, 32, 5
    return args


def translate_once(args, files, clip_path, out_path, device, dtype, task) -> dict:
    from wan_egoexo.in_context.latents import decode_latents, encode_video
    from wan_egoexo.lora import apply_lora, merge_loras
    from wan_egoexo.memory.fp8_weights import enable_fp8_storage
    from wan_egoexo.memory.modulation import enable_compact_modulation
    from wan_egoexo.memory.offload import enable_block_offload
    from wan_egoexo.memory.prompt_cache import encode_prompts_cached, release_text_encoder
    from wan_egoexo.memory.vae_chunking import enable_vae_tiling
    from wan_egoexo.pipeline.translation import encode_task_prompts, prepare_reference
    from wan_egoexo.sampling.sampler import SamplingSettings, sample_target
    from wan_egoexo.models.text_encoder_loader import load_text_encoder
    from wan_egoexo.tiny.models_folder import make_demo_image
    from wan_egoexo.models.transformer_loader import load_transformer
    from wan_egoexo.models.vae_loader import load_vae
    from wan_egoexo.video.fit import FitOptions, fit_video, unfit_video
    from wan_egoexo.video.read_write import read_video, write_video

    settings = SamplingSettings(steps=args.steps)
    stages, extra, held = {}, {}, {}

    def stage(name, fn):
        with common.peak_memory(device) as memory:
            start = time.perf_counter()
            value = fn()
            common.synchronize(device)
            stages[name] = {"seconds": time.perf_counter() - start, "memory": memory}
        return value

    clip = stage("read", lambda: read_video(clip_path))
    te_device = args.text_encoder_device or device

    def text():
        prompts = [task.prompt, ""]
        if args.prompt_cache is not None:
            embeds, stats = encode_prompts_cached(files.text_encoder, prompts, args.prompt_cache, device=te_device)
            extra["prompt_cache"] = stats
            return embeds[:1], embeds[1:]
        encoder = load_text_encoder(files.text_encoder, device=te_device)
        cond, uncond = encode_task_prompts(encoder, task, None, "", settings.cfg, device="cpu")
        release_text_encoder(encoder)
        return cond, uncond

    cond, uncond = stage("text", text)

    def load():
        vae = load_vae(files.vae, device=device)
        if args.vae_tiling:
            enable_vae_tiling(vae)
        build_device = "cpu" if args.offload else device
        transformer = load_transformer(files.transformer, device=build_device, dtype=dtype)
        if files.lora is not None:
            if args.unfused:
                apply_lora(transformer, files.lora)
            else:
                merge_loras(transformer, [(files.lora, 1.0)], device=device)
        if args.compact:
            enable_compact_modulation(transformer)
        if args.fp8:
            enable_fp8_storage(transformer, compute_dtype=dtype)
        if args.offload:
            enable_block_offload(transformer, device, args.resident)
        held.update(vae=vae, transformer=transformer)

    stage("load", load)
    fit = FitOptions(width=args.width, height=args.height, max_frames=args.frames)

    def encode():
        video, info = fit_video(clip.frames, clip.fps, fit)
        image = make_demo_image() if task.uses_reference else None
        reference = prepare_reference(task, image, info.width, info.height)
        source = encode_video(held["vae"], video[None])
        ref_latents = None if reference is None else encode_video(held["vae"], reference)
        return info, source, ref_latents

    info, source, ref_latents = stage("encode", encode)

    def sample():
        with torch.no_grad():
            return sample_target(held["transformer"], source, cond, uncond, reference=ref_latents, settings=settings,
                                 cfg_batch=args.cfg_batch)

    latents = stage("sample", sample)
    frames = stage("decode", lambda: unfit_video(decode_latents(held["vae"], latents)[0], info))
    stage("write", lambda: write_video(out_path, frames, info.output_fps))
    held.clear()
    return {"stages": stages, **extra}


def run(argv=None) -> dict:
    from wan_egoexo.models.model_files import find_model_files
    from wan_egoexo.in_context.tasks import get_task
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip

    args = parse(argv)
    device, dtype = common.setup(args)
    task = get_task(args.task)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.models_dir is None:
            files = build_tiny_models_folder(work / "models", tasks=(task.name,))[task.name]
            args.model = "tiny"
        else:
            files = find_model_files(task, args.models_dir)
            args.model = "5b"
        clip_path = make_demo_clip(work / "clip.mp4", frames=max(args.frames, 5), width=args.width,
                                   height=args.height)
        runs = [translate_once(args, files, clip_path, work / f"out{index}.mp4", device, dtype, task)
                for index in range(args.runs)]
    # Stage measurements reset the peak counters, so the overall peak is the largest stage peak.
    stage_memory = [stage["memory"] for result in runs for stage in result["stages"].values()]
    overall = max(stage_memory, key=lambda memory: memory["peak_bytes"])
    results = {"runs": runs, "overall_memory": overall}

    rows = []
    for index, result in enumerate(runs):
        for name in STAGES:
            entry = result["stages"][name]
            rows.append([index + 1, name, f"{entry['seconds']:.2f}", common.mib(entry["memory"]["peak_bytes"]),
                         common.mib(entry["memory"]["delta_bytes"])])
        if "prompt_cache" in result:
            stats = result["prompt_cache"]
            rows.append([index + 1, "(prompt cache)", f"hits {stats['hits']} misses {stats['misses']}",
                         "UMT5 loaded" if stats["loaded"] else "UMT5 not loaded", ""])
    options = [name for name in ("compact", "vae_tiling", "fp8", "offload") if getattr(args, name)]
    peak_kind = overall.get("kind", "")
    common.print_table(
        f"translate {task.name}, {args.model} models, {args.width}x{args.height}x{args.frames}, {args.steps} steps, "
        f"{device}/{str(dtype).replace('torch.', '')}, options: {', '.join(options) or 'none'}"
        f"{', prompt cache' if args.prompt_cache else ''}; overall peak {common.mib(overall['peak_bytes'])} MiB "
        f"({peak_kind})",
        ["run", "stage", "seconds", "peak MiB", "+MiB in stage"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
