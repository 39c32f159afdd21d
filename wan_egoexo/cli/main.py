"""Command line: ``python -m wan_egoexo translate ...`` and ``python -m wan_egoexo convert-lora IN OUT``."""

from __future__ import annotations

import argparse
import logging
import math
import sys

from ..errors import WanEgoExoError
from ..models.model_files import MODELS_ENV
from ..option_ranges import CFG_RANGE, LORA_STRENGTH_RANGE, SEED_RANGE, SHIFT_RANGE, STEPS_RANGE


class _DefaultsOnce(argparse.HelpFormatter):
    """Shows each option's default once: appended unless the help already states it (or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in text \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def number(kind=float, low=None, high=None, low_open=False):
    """An argparse type: a finite int or float within [low, high] ((low, high] with ``low_open``),
    refused with the rule otherwise. Bounds come from wan_egoexo.option_ranges where the core has one."""
    if low_open:
        span = f" > {low} and <= {high}"
    else:
        span = f" from {low} to {high}" if low is not None and high is not None else \
            (f" >= {low}" if low is not None else (f" <= {high}" if high is not None else ""))
    noun = "whole number" if kind is int else "finite number"

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        outside = value is not None and ((low is not None and (value <= low if low_open else value < low))
                                         or (high is not None and value > high))
        if value is None or (kind is float and not math.isfinite(value)) or outside:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected a {noun}{span}")
        return value

    parse.__name__ = noun  # argparse names the type in its own messages
    return parse


def _translate_parser(sub) -> None:
    p = sub.add_parser("translate", help="translate a clip between the third-person and first-person view",
                       formatter_class=_DefaultsOnce,
                       epilog="Try it on your own clip without the model files: --demo --video CLIP runs the tiny "
                              "random model (CPU, under a minute; the output is noise, the timing, size and sound "
                              "handling are real).")
    p.add_argument("--task", default="exo2ego",
                   help="exo2ego (alias three2one) or ego2exo (alias one2three)")
    p.add_argument("--video", help="input clip (mp4/mov/webm/mkv/avi/gif), a folder of frames, or a batch: a folder "
                   "of clips or a .txt list")
    p.add_argument("--out", help="output .mp4/.mov/.mkv path (a folder for a batch)")
    p.add_argument("--reference", help="ego2exo: an image of the subject (full body, e.g. from behind); for a batch, "
                   "one image or a folder of images named like the clips")
    p.add_argument("--no-audio", action="store_true", help="leave the source's sound out of the output (by default "
                   "the sound of the translated span is kept: copied, or re-encoded to AAC when the container needs)")
    g = p.add_argument_group("models")
    g.add_argument("--models-dir", help=f"a ComfyUI models folder (default: ${MODELS_ENV}, ./models, ~/ComfyUI/models)")
    g.add_argument("--diffusers", help="a Diffusers-format Wan2.2-TI2V-5B folder instead of ComfyUI files")
    g.add_argument("--lora", help="LoRA file (default: the released WorldWander LoRA for the task in models/loras)")
    g.add_argument("--lora-domain", default="realworld", choices=["realworld", "synthetic"],
                   help="which released LoRA to look for")
    g.add_argument("--lora-strength", type=number(float, *LORA_STRENGTH_RANGE), default=1.0, help="LoRA scale (0 turns it off)")
    g.add_argument("--no-lora", action="store_true", help="run the base model without a LoRA")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--dtype", default="auto", help="transformer dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    g.add_argument("--attention", default="auto",
                   help="attention backend: auto (flash-attn when installed and supported, else sdpa), sdpa, flash, ...")
    m = p.add_argument_group("memory (auto picks the fastest set that fits the free GPU memory; flags override it)")
    m.add_argument("--memory", default="auto", choices=["auto", "none"],
                   help="none: everything resident, no prompt cache, diffusers' default modulation, unfused LoRA")
    m.add_argument("--cfg-batch", type=int, choices=[1, 2], default=None,
                   help="guidance: 2 = both passes in one batch, 1 = one after the other (exact, half the "
                   "activation memory); default: per plan")
    m.add_argument("--offload", action=argparse.BooleanOptionalAction, default=None,
                   help="stream transformer blocks from CPU memory ahead of use (default: per plan, which keeps as "
                   "many resident as fit)")
    m.add_argument("--resident-blocks", type=number(int, 0), default=None,
                   help="with offloading: transformer blocks kept on the GPU (default: as many as fit; --offload "
                   "alone: 0)")
    m.add_argument("--lora-mode", choices=["merged", "unfused"], default=None,
                   help="merged: LoRA added into the weights (fastest); unfused: a separate adapter")
    m.add_argument("--fp8", action=argparse.BooleanOptionalAction, default=None,
                   help="store transformer weights in fp8, compute in bf16 (16 GB GPUs; slightly lossy)")
    m.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=None,
                   help="VAE encode/decode in spatial tiles")
    m.add_argument("--text-encoder-device", help="where UMT5 runs (cpu keeps the GPU free); default: per plan")
    m.add_argument("--prompt-cache", help="prompt-embedding cache folder (default: $WAN_EGOEXO_CACHE/prompts "
                   "or ~/.cache/wan_egoexo/prompts)")
    m.add_argument("--no-prompt-cache", action="store_true", help="always run the text encoder")
    m.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    s = p.add_argument_group("sampling")
    s.add_argument("--prompt", help="default: the task's fixed training prompt")
    s.add_argument("--negative-prompt", default="", help="text guided away from (default: empty, as trained)")
    s.add_argument("--steps", type=number(int, *STEPS_RANGE), default=50, help="denoising steps")
    s.add_argument("--cfg", type=number(float, *CFG_RANGE), default=5.0, help="text guidance scale (1 = no guidance)")
    s.add_argument("--shift", type=number(float, *SHIFT_RANGE, low_open=True), default=5.0, help="flow shift of the noise schedule (> 0)")
    s.add_argument("--solver", default="unipc", choices=["unipc", "euler"], help="sampler")
    s.add_argument("--seed", type=number(int, *SEED_RANGE), default=1234, help="noise seed")
    s.add_argument("--positions", default="collaborative", choices=["collaborative", "uniform"],
                   help="time positions of the output: the source's (as trained) or consecutive (ablation)")
    f = p.add_argument_group("fitting the clip to the model grid (frames are placed by their timestamps)")
    f.add_argument("--width", type=number(int, 32), help="multiple of 32 (default: the grid size nearest the "
                   "input's aspect ratio at about 1280x704 pixels, e.g. 1248x704 for 16:9)")
    f.add_argument("--height", type=number(int, 32), help="multiple of 32 (default: see --width)")
    f.add_argument("--frames", type=number(int, 0), default=0,
                   help="most frames to translate, 4k+1 (0 = the whole clip, in sliding windows)")
    f.add_argument("--fps", type=number(float, 0.0, 240.0), default=8.0,
                   help="resample time to this rate by the frames' timestamps (the model's 8 fps; 0 = no "
                   "resampling: every --frame-stride-th frame)")
    f.add_argument("--frame-stride", type=number(int, 1), help="take every Nth input frame instead of resampling "
                   "to --fps")
    f.add_argument("--start-frame", type=number(int, 0), default=0, help="first input frame to translate")
    f.add_argument("--input-fps", type=number(float, 0.001, 1000.0), default=None,
                   help="frame rate of a folder of frames (or a still image) (default: 8, the model's rate)")
    f.add_argument("--fit", default="crop", choices=["crop", "pad", "stretch"],
                   help="crop: centre crop to the grid's aspect; pad: letterbox; stretch: ignore the aspect")
    f.add_argument("--output-rate", default="source", choices=["source", "model"],
                   help="source: the input's frame rate and frame count; model: the translated frames as they are")
    w = p.add_argument_group("long clips (sliding windows, in latent frames: 13 latent = 49 video frames)")
    w.add_argument("--window", type=number(int, 1), default=13, help="window length in latent frames")
    w.add_argument("--overlap", type=number(int, 0), default=4, help="overlap between windows in latent frames")
    w.add_argument("--window-batch", type=number(int, 1), default=1,
                   help="windows per forward pass (faster, more memory)")
    w.add_argument("--ramp", default="linear", choices=["linear", "cosine"], help="blend between windows")
    b = p.add_argument_group("batches (--video is a folder of clips or a .txt list; --out is a folder)")
    b.add_argument("--shard", help="i/n: translate every n-th clip starting at i (default: torchrun's RANK/WORLD_SIZE)")
    b.add_argument("--jobs", type=number(int, 1, 1024), default=1,
                   help="processes to run, one per GPU, each its own shard")
    p.add_argument("--demo", action="store_true",
                   help="run everything on a tiny random model (CPU, under a minute) on a generated clip, or on "
                   "your own with --video CLIP")


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


def _run_convert(args) -> int:
    from ..lora import convert_lora_file  # noqa: PLC0415

    out = convert_lora_file(args.src, args.dst)
    print(f"wrote {out}")
    return 0


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (it may have been replaced since)."""

    def emit(self, record) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_warnings() -> None:
    """The core's warnings (assumed timestamps, truncated files) reach the terminal as "WARNING: ..."."""
    logger = logging.getLogger("wan_egoexo")
    if not any(isinstance(handler, _Stderr) for handler in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _show_warnings()
    try:
        if args.command == "translate":
            from .translate import run_translate  # noqa: PLC0415

            return run_translate(args)
        return _run_convert(args)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); nothing was written for the clip in progress", file=sys.stderr)
        return 130
