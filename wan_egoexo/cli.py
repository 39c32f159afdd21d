"""Command line: ``python -m wan_egoexo translate ...`` and ``python -m wan_egoexo convert-lora IN OUT``."""

from __future__ import annotations

import argparse
import sys

from .errors import WanEgoExoError
from .model_files import MODELS_ENV

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
    g.add_argument("--attention", default="auto",
                   help="attention backend: auto (flash-attn when installed and supported, else sdpa), sdpa, flash, ...")
    m = p.add_argument_group("memory (auto picks the fastest set that fits the free GPU memory; flags override it)")
    m.add_argument("--memory", default="auto", choices=["auto", "none"],
                   help="none: everything resident, no prompt cache, diffusers' default modulation")
    m.add_argument("--offload", action=argparse.BooleanOptionalAction, default=None,
                   help="stream transformer blocks from CPU memory ahead of use (24 GB GPUs)")
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
    f.add_argument("--frames", type=int, default=0,
                   help="most frames to translate, 4k+1 (0 = the whole clip, in sliding windows)")
    f.add_argument("--fps", type=float, default=8.0, help="resample time to this rate (the model's 8 fps)")
    f.add_argument("--frame-stride", type=int, help="take every Nth input frame instead of resampling to --fps")
    f.add_argument("--start-frame", type=int, default=0)
    f.add_argument("--fit", default="crop", choices=["crop", "pad", "stretch"])
    f.add_argument("--output-rate", default="source", choices=["source", "model"],
                   help="source: the input's frame rate and frame count; model: the translated frames as they are")
    w = p.add_argument_group("long clips (sliding windows, in latent frames: 13 latent = 49 video frames)")
    w.add_argument("--window", type=int, default=13, help="window length in latent frames")
    w.add_argument("--overlap", type=int, default=4, help="overlap between windows in latent frames")
    w.add_argument("--window-batch", type=int, default=1, help="windows per forward pass (faster, more memory)")
    w.add_argument("--ramp", default="linear", choices=["linear", "cosine"], help="blend between windows")
    b = p.add_argument_group("batches (--video is a folder of clips or a .txt list; --out is a folder)")
    b.add_argument("--shard", help="i/n: translate every n-th clip starting at i (default: torchrun's RANK/WORLD_SIZE)")
    b.add_argument("--jobs", type=int, default=1, help="processes to run, one per GPU, each its own shard")
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


def _run_convert(args) -> int:
    from .lora import convert_lora_file  # noqa: PLC0415

    out = convert_lora_file(args.src, args.dst)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "translate":
            from .cli_translate import run_translate  # noqa: PLC0415

            return run_translate(args)
        return _run_convert(args)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
