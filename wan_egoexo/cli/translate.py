"""The ``translate`` command: one clip, a batch of clips (optionally over several processes), or the demo."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..pipeline.batch import is_batch_source, list_clips, parse_shard, run_batch
from ..errors import InputError
from ..models.model_files import find_model_files
from ..pipeline.translation import load_models, translate_clip
from ..pipeline.preflight import Problems, check_lora, check_options, check_run
from ..sampling.sampler import SamplingSettings
from ..in_context.tasks import get_task
from ..video.fit import FitOptions, summarize
from ..in_context.windows import WindowOptions

DEMO_NOTICE = ("DEMO: this ran a tiny RANDOMLY INITIALISED model of the real architecture, so the output video "
               "is noise. It proves the installation and the whole pipeline work, not the model.")


def progress_bar():
    """A tqdm bar created at the first step, so model loading messages do not interleave with it."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    state = {}

    def callback(info):
        if "bar" not in state or info.step == 1:
            state["bar"] = tqdm(total=info.total, desc="sampling", unit="step")
        state["bar"].update(1)
        if info.step == info.total:
            state["bar"].close()

    return callback


def _options(args, demo: bool, problems: Problems):
    """The run's settings, every numeric option checked by the validators the run itself uses (problems are
    added to ``problems``; the fit is None when its options are invalid)."""
    settings = SamplingSettings(steps=min(args.steps, 4) if demo else args.steps, cfg=args.cfg, shift=args.shift,
                                solver=args.solver, seed=args.seed)
    fps = None if args.frame_stride or not args.fps else args.fps
    stride = args.frame_stride or (None if fps else 1)
    frames = args.frames or (9 if demo else None)
    size = (args.width or 64, args.height or 64) if demo else (args.width, args.height)
    fit = dict(width=size[0], height=size[1], max_frames=frames, fps=fps, frame_stride=stride,
               start_frame=args.start_frame, mode=args.fit)
    windows = WindowOptions(args.window, args.overlap, args.ramp, args.window_batch)
    fit = check_options(settings, fit, windows, None if args.no_lora else args.lora_strength, args.jobs, problems)
    return settings, fit, windows


def memory_plan(args, task, fit: FitOptions, windows: WindowOptions, settings: SamplingSettings, device,
                has_lora: bool = True):
    """The memory plan for this run: chosen from the free GPU memory (--memory auto) for the largest
    forward the run makes (one window, with the clip's size, task and guidance), then overridden by
    the explicit flags."""
    from ..devices import resolve_device  # noqa: PLC0415
    from ..memory.auto import UNFUSED_RANK_GUESS, MemoryPlan, choose_memory_plan  # noqa: PLC0415

    device = resolve_device(device)
    guidance = settings.cfg != 1
    merge = args.lora_mode != "unfused" and (args.memory == "auto" or args.lora_mode == "merged")
    if args.memory == "auto":
        window_frames = (windows.length - 1) * 4 + 1
        frames = min(fit.max_frames or window_frames, window_frames)
        plan = choose_memory_plan(fit.height or 704, fit.width or 1280, frames, task.uses_reference, guidance,
                                  args.cfg_batch, device, lora_rank=0 if merge or not has_lora else UNFUSED_RANK_GUESS,
                                  clips_per_forward=windows.batch)
    else:
        plan = MemoryPlan(device=str(device), compact_modulation=False, prompt_cache=False,
                          text_encoder_device=str(device), cfg_batch=args.cfg_batch or 2)
    overrides = {"fp8_weights": args.fp8, "vae_tiling": args.vae_tiling,
                 "text_encoder_device": args.text_encoder_device, "cfg_batch": args.cfg_batch}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["merge_loras"] = merge
    if args.resident_blocks is not None:
        if args.offload is False:
            raise InputError("--resident-blocks: only with offloading; drop --no-offload.")
        overrides["resident_blocks"] = args.resident_blocks
    elif args.offload is False:
        overrides["resident_blocks"] = None
    elif args.offload and plan.resident_blocks is None:
        overrides["resident_blocks"] = 0
    if args.no_prompt_cache or args.demo:
        overrides["prompt_cache"] = False
    if args.compile:
        overrides["compile_blocks"] = True
    if args.attention != "auto":
        overrides["attention"] = args.attention
    return dataclasses.replace(plan, **overrides)


def _spawn_jobs(args) -> int:
    """Re-run this command once per job with its own --shard (and GPU when there are GPUs)."""
    argv, skip = [], False
    for item in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if item in ("--jobs", "--shard"):
            skip = True
            continue
        if not item.startswith(("--jobs=", "--shard=")):
            argv.append(item)
    import torch  # noqa: PLC0415

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    procs = []
    for index in range(args.jobs):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        cmd = [sys.executable, "-m", "wan_egoexo", *argv, "--shard", f"{index}/{args.jobs}"]
        procs.append(subprocess.Popen(cmd, env=env))
    return max(proc.wait() for proc in procs)


def _inputs(args, task, work: Path):
    """(video, out, reference) of the run; for --demo a generated clip (unless --video) and reference."""
    if not args.demo:
        return args.video, args.out, args.reference
    from PIL import Image  # noqa: PLC0415

    from ..tiny.models_folder import make_demo_clip, make_demo_image  # noqa: PLC0415

    video = args.video or make_demo_clip(work / "demo_input.mp4")
    reference = args.reference
    if task.uses_reference and reference is None:
        reference = work / "demo_reference.png"
        Image.fromarray(make_demo_image()).save(reference)
    return video, args.out or "worldwander_demo.mp4", reference


def _model_files(args, task, work: Path):
    if args.demo:
        from ..tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415

        return build_tiny_models_folder(work / "models", tasks=[task.name])[task.name]
    return find_model_files(task, args.models_dir, args.diffusers, args.lora, args.lora_domain,
                            use_lora=not args.no_lora)


def _largest(fit: FitOptions, jobs) -> FitOptions:
    """The fit with the size of the run's largest planned clip (for the memory plan)."""
    biggest = max(jobs, key=lambda job: job.fit.width * job.fit.height).fit
    return dataclasses.replace(fit, width=biggest.width, height=biggest.height)


def run_translate(args) -> int:
    task = get_task(args.task)
    problems = Problems()
    settings, fit, windows = _options(args, args.demo, problems)
    if not args.demo and (not args.video or not args.out):
        print("error: translate needs --video and --out (or --demo)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="wan_egoexo_demo_") as work:
        video, out, reference = _inputs(args, task, Path(work))
        batch = not args.demo and is_batch_source(video)
        if args.jobs > 1 and not batch:
            raise InputError(f"jobs: --jobs {args.jobs} splits a batch (--video a folder or .txt list) over "
                             "processes; a single clip runs in one process.")
        clips = list_clips(video) if batch else [Path(video)]
        shard = parse_shard(args.shard) if batch and args.jobs == 1 else (0, 1)
        # An explicit --lora is checked with the other inputs (a missing one is reported with the model
        # files, with where to get it); the default LoRA once the models folder has been searched.
        given_lora = None if args.no_lora or args.demo or not args.lora else Path(args.lora).expanduser()
        given_lora = given_lora if given_lora is not None and given_lora.is_file() else None
        jobs, skipped = check_run(task, clips, out, fit, args.input_fps, reference, batch, shard, problems,
                                  lora=given_lora)
        if args.jobs > 1:
            return _spawn_jobs(args)  # every clip checked above; each process checks its own shard again
        if batch and not jobs:  # every output exists: nothing to load
            report = run_batch([], None, skipped)
            print(report.summary())
            return report.exit_code
        files = _model_files(args, task, Path(work))
        if files.lora is not None and given_lora is None:
            check_lora(files.lora)  # before any model loads
        device, dtype = ("cpu", "fp32") if args.demo else (args.device, args.dtype)
        plan = memory_plan(args, task, _largest(fit, jobs) if jobs else fit, windows, settings, device,
                           files.lora is not None)
        models = load_models(files, task, args.prompt, args.negative_prompt, settings.cfg, args.lora_strength,
                             device, dtype, plan.attention, plan=plan, prompt_cache_dir=args.prompt_cache)
        on = [name for name in ("compact_modulation", "vae_tiling", "fp8_weights", "prompt_cache", "merge_loras",
                                "compile_blocks") if getattr(plan, name)]
        blocks = "all blocks resident" if plan.resident_blocks is None else \
            f"{plan.resident_blocks} blocks resident, the rest streamed"
        print(f"memory plan on {plan.device}: {', '.join(on) or 'defaults'}; guidance batch {plan.cfg_batch}; "
              f"{blocks}; attention {plan.attention}; text encoder on {plan.text_encoder_device}")

        def translate_one(job):
            start = time.perf_counter()
            result = translate_clip(models, job.source, job.out, job.reference, fit, settings, args.positions,
                                    windows, args.output_rate, progress_bar(), audio=not args.no_audio)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
            sound = "no audio" if args.no_audio or job.source.audio is None else "with the source's audio"
            print(f"input: {summarize(result.fit)}")
            print(f"wrote {job.out}: {len(result.frames)} frames at {result.fps:g} fps ({result.seconds:.2f} s, "
                  f"{sound}) in {time.perf_counter() - start:.1f}s ({stages})")

        if batch:
            report = run_batch(jobs, translate_one, skipped)
            print(report.summary())
            return report.exit_code
        translate_one(jobs[0])
    if args.demo:
        print(DEMO_NOTICE)
    return 0
