"""Command line: ``python -m wan_egoexo translate ...`` and ``python -m wan_egoexo convert-lora IN OUT``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .errors import WanEgoExoError
from .model_files import MODELS_ENV

DEMO_NOTICE = ("DEMO: this ran a tiny RANDOMLY INITIALISED model of the real architecture, so the output video "
               "is noise. It proves the installation and the whole pipeline work, not the model.")


def _translate_parser(sub) -> None:
    p = sub.add_parser("translate", help="translate a clip between the third-person and first-person view",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="exo2ego",
                   help="exo2ego (alias three2one) or ego2exo (alias one2three)")
    p.add_argument("--video", help="input clip: mp4/mov/webm/mkv/gif or a folder of frames")
    p.add_argument("--out", help="output .mp4 path")
    p.add_argument("--reference", help="ego2exo: an image of the subject (full body, e.g. from behind)")
    g = p.add_argument_group("models")
    g.add_argument("--models-dir", help=f"a ComfyUI models folder (default: ${MODELS_ENV}, ./models, ~/ComfyUI/models)")
    g.add_argument("--diffusers", help="a Diffusers-format Wan2.2-TI2V-5B folder instead of ComfyUI files")
    g.add_argument("--lora", help="LoRA file (default: the released WorldWander LoRA for the task in models/loras)")
    g.add_argument("--lora-domain", default="realworld", choices=["realworld", "synthetic"],
                   help="which released LoRA to look for")
    g.add_argument("--lora-strength", type=float, default=1.0)
    g.add_argument("--no-lora", action="store_true", help="run the base model without a LoRA")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--dtype", default="auto", help="transformer dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    g.add_argument("--attention", default="sdpa", help="attention backend: sdpa or a diffusers backend (flash, ...)")
    s = p.add_argument_group("sampling")
    s.add_argument("--prompt", help="default: the task's fixed training prompt")
    s.add_argument("--negative-prompt", default="")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--cfg", type=float, default=5.0)
    s.add_argument("--shift", type=float, default=5.0)
    s.add_argument("--solver", default="unipc", choices=["unipc", "euler"])
    s.add_argument("--seed", type=int, default=1234)
    s.add_argument("--positions", default="collaborative", choices=["collaborative", "uniform"])
    f = p.add_argument_group("fitting the clip to the model grid")
    f.add_argument("--width", type=int, help="multiple of 32 (default: 1280x704 area oriented like the input)")
    f.add_argument("--height", type=int, help="multiple of 32")
    f.add_argument("--frames", type=int, default=49, help="most frames to translate (4k+1)")
    f.add_argument("--fps", type=float, default=8.0, help="resample time to this rate (the model's 8 fps)")
    f.add_argument("--frame-stride", type=int, help="take every Nth input frame instead of resampling to --fps")
    f.add_argument("--start-frame", type=int, default=0)
    f.add_argument("--fit", default="crop", choices=["crop", "pad", "stretch"])
    p.add_argument("--demo", action="store_true",
                   help="run everything on a tiny random model and a generated clip (CPU, < 1 minute)")


def _convert_parser(sub) -> None:
    p = sub.add_parser("convert-lora", help="convert a LoRA (.ckpt or any layout) to a safetensors that "
                       "diffusers and ComfyUI's LoRA loader both read")
    p.add_argument("src")
    p.add_argument("dst")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_egoexo",
                                     description="WorldWander ego/exo video translation on Wan2.2-TI2V-5B")
    sub = parser.add_subparsers(dest="command", required=True)
    _translate_parser(sub)
    _convert_parser(sub)
    return parser


def _progress_bar():
    """A tqdm bar created at the first step, so model loading messages do not interleave with it."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    state = {}

    def callback(info):
        if "bar" not in state:
            state["bar"] = tqdm(total=info.total, desc="sampling", unit="step")
        state["bar"].update(1)
        if info.step == info.total:
            state["bar"].close()

    return callback


def _run_translate(args) -> int:
    from .model_files import find_model_files  # noqa: PLC0415
    from .pipeline import translate_file  # noqa: PLC0415
    from .sampling import SamplingSettings  # noqa: PLC0415
    from .tasks import get_task  # noqa: PLC0415
    from .video_fit import FitOptions, summarize  # noqa: PLC0415

    task = get_task(args.task)
    settings = SamplingSettings(steps=args.steps, cfg=args.cfg, shift=args.shift, solver=args.solver, seed=args.seed)
    fps = None if args.frame_stride else args.fps
    fit = FitOptions(width=args.width, height=args.height, max_frames=args.frames, fps=fps,
                     frame_stride=args.frame_stride, start_frame=args.start_frame, mode=args.fit)
    with tempfile.TemporaryDirectory(prefix="wan_egoexo_demo_") as work:
        if args.demo:
            from .tiny.models_folder import build_tiny_models_folder, make_demo_clip, make_demo_image  # noqa: PLC0415

            files = build_tiny_models_folder(Path(work) / "models", tasks=[task.name])[task.name]
            video = args.video or make_demo_clip(Path(work) / "demo_input.mp4")
            reference = args.reference
            if task.uses_reference and reference is None:
                reference = Path(work) / "demo_reference.png"
                from PIL import Image  # noqa: PLC0415

                Image.fromarray(make_demo_image()).save(reference)
            out = args.out or "worldwander_demo.mp4"
            settings.steps = min(settings.steps, 4)
            fit = FitOptions(width=args.width or 64, height=args.height or 64, max_frames=min(args.frames, 9),
                             fps=fps, frame_stride=args.frame_stride, start_frame=args.start_frame, mode=args.fit)
            device, dtype = "cpu", "fp32"
        else:
            if not args.video or not args.out:
                print("error: translate needs --video and --out (or --demo)", file=sys.stderr)
                return 2
            files = find_model_files(task, args.models_dir, args.diffusers, args.lora, args.lora_domain,
                                     use_lora=not args.no_lora)
            video, reference, out = args.video, args.reference, args.out
            device, dtype = args.device, args.dtype
        start = time.perf_counter()
        result = translate_file(files, task, video, out, reference, args.prompt, args.negative_prompt, fit,
                                settings, args.positions, args.lora_strength, device, dtype, args.attention,
                                callback=_progress_bar())
    print(f"input: {summarize(result.fit)}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(f"wrote {out}: {len(result.frames)} frames at {result.fps:g} fps in {time.perf_counter() - start:.1f}s "
          f"({stages})")
    if args.demo:
        print(DEMO_NOTICE)
    return 0


def _run_convert(args) -> int:
    from .lora import convert_lora_file  # noqa: PLC0415

    out = convert_lora_file(args.src, args.dst)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_translate(args) if args.command == "translate" else _run_convert(args)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
