"""Benchmark (accuracy, not speed): how far a LoRA's effect moves when the native path's weights are
fp8. Inside a real ComfyUI (imported from a temporary copy, the pack loaded as a custom node pack,
the test machinery of tests/comfyui/native_worker.py), the tiny Wan2.2-5B transformer is loaded by
UNETLoader twice, weight_dtype "default" (float32 on the CPU) and "fp8_e4m3fn", and the WorldWander
LoRA goes on through WorldWander LoRA (native). The LoRA's effect is flow(model + LoRA) - flow(model)
on the same in-context input (the target part, normalised latents); the row gives how far the fp8
model's effect is from the float32 model's, as ||e_fp8 - e_fp32|| / ||e_fp32|| and as max |e_fp8 -
e_fp32| / max |e_fp32|, beside how far the fp8 model's plain output is from the float32 one.

ComfyUI merges a LoRA into fp8 weights and rounds the sum back to fp8 (stochastic rounding), so a
LoRA delta smaller than the fp8 step of its weight is partly lost; GGUF models (ComfyUI-GGUF) add
the LoRA to the dequantised weight at run time instead (not measured here: ComfyUI-GGUF is not
installed).

    python -m benchmarks.bench_native_lora_fp8 --comfyui ../shared/comfyui/ComfyUI-0.3.64
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

NAME = "bench_native_lora_fp8"


def _flow(ctx, model, task: str, sigma: float):
    """The target part of (x - denoised) / sigma through ComfyUI's model wrapper."""
    import torch  # noqa: PLC0415
    from native_worker import clean_parts, in_context, inputs  # noqa: PLC0415

    patched, latent = in_context(ctx, model, task, "collaborative")
    ref, source = clean_parts(patched, latent)
    _, _, cond, _, target = inputs()
    x = torch.cat(([] if ref is None else [ref]) + [source, target], dim=2)
    sigmas = torch.tensor([sigma])
    ctx.host.comfy.model_management.load_models_gpu([patched])
    denoised = patched.model.apply_model(x, sigmas, c_crossattn=cond, denoise_mask=latent["noise_mask"])
    return ((x - denoised) / sigmas)[:, :, -3:].double().cpu()


def _rel(a, b) -> tuple[float, float]:
    return float((a - b).norm() / b.norm()), float((a - b).abs().max() / b.abs().max())


def run(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="a ComfyUI source tree")
    parser.add_argument("--strengths", default="1.0,0.5")
    parser.add_argument("--sigmas", default="0.7,0.3")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the command here")
    args = parser.parse_args(argv)
    if not args.comfyui or not (Path(args.comfyui) / "main.py").is_file():
        raise SystemExit("--comfyui (or COMFYUI_PATH): a ComfyUI source tree with main.py")
    sys.path[:0] = [str(REPO / "tests" / "comfyui"), str(REPO / "tests")]
    import torch  # noqa: PLC0415
    from native_host import run_node, start_host  # noqa: PLC0415
    from native_worker import CKPT, TASKS, UNET, VAE, encode_once, write_models  # noqa: PLC0415
    from server import copy_comfyui  # noqa: PLC0415
    from benchmarks import common  # noqa: PLC0415
    from wan_egoexo.tiny.vae import tiny_vae_config  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="bench_native_lora_fp8_"))
    comfy_dir = copy_comfyui(Path(args.comfyui).resolve(), work / "ComfyUI")
    written = write_models(work)
    (work / "input").mkdir(exist_ok=True)
    rows = []
    with torch.inference_mode():
        host = start_host(comfy_dir, written["models"], work / "input", tiny_vae_config())
        ctx = types.SimpleNamespace(host=host, vae=encode_once(run_node(host.nodes.VAELoader, VAE)[0]))
        lora_node = host.pack["WorldWanderLoraNative"]
        base = {dtype: run_node(host.nodes.UNETLoader, UNET, dtype)[0] for dtype in ("default", "fp8_e4m3fn")}
        for strength in (float(s) for s in args.strengths.split(",")):
            with_lora = {dtype: run_node(lora_node, model, CKPT, strength)[0] for dtype, model in base.items()}
            for task in TASKS:
                for sigma in (float(s) for s in args.sigmas.split(",")):
                    flows = {(dtype, lora): _flow(ctx, (with_lora if lora else base)[dtype], task, sigma)
                             for dtype in base for lora in (False, True)}
                    effect = {dtype: flows[(dtype, True)] - flows[(dtype, False)] for dtype in base}
                    l2, peak = _rel(effect["fp8_e4m3fn"], effect["default"])
                    base_l2, _ = _rel(flows[("fp8_e4m3fn", False)], flows[("default", False)])
                    rows.append({"strength": strength, "task": task, "sigma": sigma, "effect_l2": l2,
                                 "effect_max": peak, "base_l2": base_l2,
                                 "effect_size": float(effect["default"].norm() / flows[("default", False)].norm())})
    print(f"ComfyUI {args.comfyui}, tiny Wan2.2-5B (2 blocks of width 256), rank-4 WorldWander LoRA on the ten "
          "block linears and the head, 9 frames 64x96")
    print("| strength | task | sigma | LoRA effect / output (fp32) | fp8 effect off, L2 | fp8 effect off, max "
          "| fp8 output off (no LoRA), L2 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strength']:g} | {r['task']} | {r['sigma']:g} | {r['effect_size']:.1%} | {r['effect_l2']:.1%} "
              f"| {r['effect_max']:.1%} | {r['base_l2']:.1%} |")
    common.write_json(args.json, NAME, argv, args, "cpu", rows)
    return rows


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
