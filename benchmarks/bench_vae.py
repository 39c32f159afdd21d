"""Benchmark: VAE encode and decode time and peak memory, untiled and tiled, and the peak per
output pixel that the memory model (wan_egoexo.memory.footprint) scales to 704x1280.

    python -m benchmarks.bench_vae                                           # tiny VAE
    python -m benchmarks.bench_vae --model 5b --height 256 --width 256 --frames 5   # real Wan2.2 VAE
                                                                                    # architecture

"5b" here means the released Wan2.2 VAE architecture (705 M parameters) with random weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common

NAME = "bench_vae"


def build_vae(args, device, dtype):
    from diffusers import AutoencoderKLWan

    from wan_egoexo.memory.footprint import WAN22_VAE_CONFIG
    from wan_egoexo.tiny.vae import build_tiny_vae

    if args.model == "tiny":
        return build_tiny_vae(0).to(device=device, dtype=dtype)
    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKLWan(**WAN22_VAE_CONFIG)
    return vae.to(dtype).eval().requires_grad_(False)


def run(argv=None) -> list[dict]:
    from wan_egoexo.in_context.latents import latent_shape
    from wan_egoexo.memory.vae_chunking import disable_vae_tiling, enable_vae_tiling

    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--tile", type=int, default=None, help="tile size in pixels (default: 256, tiny: 64)")
    parser.add_argument("--stride", type=int, default=None, help="tile stride in pixels (default: 192, tiny: 32)")
    args = parser.parse_args(argv)
    common.apply_fast(args)
    if args.fast:
        args.height, args.width = 64, 96
    tile = args.tile or (64 if args.model == "tiny" else 256)
    stride = args.stride or (32 if args.model == "tiny" else 192)
    device, dtype = common.setup(args)
    frames, height, width = latent_shape(args.frames, args.height, args.width)
    vae = build_vae(args, device, dtype)
    generator = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 3, args.frames, args.height, args.width, generator=generator) * 2 - 1).to(device, dtype)
    latents = torch.randn(1, vae.config.z_dim, frames, height, width, generator=generator).to(device, dtype)
    pixels = args.height * args.width

    results = []
    for tiled in (False, True):
        if tiled:
            enable_vae_tiling(vae, tile, stride)
        else:
            disable_vae_tiling(vae)
        for name, fn in (("encode", lambda: vae.encode(video).latent_dist.mode()),
                         ("decode", lambda: vae.decode(latents).sample)):
            with torch.no_grad():
                times = common.interleaved_times({name: fn}, device, min(args.warmup, 1),
                                                 max(1, args.rounds // 2))[name]
                with common.peak_memory(device) as memory:
                    fn()
            results.append({"op": name, "tiled": tiled, "tile": tile if tiled else None,
                            "stride": stride if tiled else None, "median_s": common.median(times), "times_s": times,
                            "memory": memory, "bytes_per_pixel": memory["delta_bytes"] / pixels})
    rows = [[r["op"], f"{r['tile']}/{r['stride']}" if r["tiled"] else "untiled", f"{r['median_s']:.2f}",
             common.mib(r["memory"]["delta_bytes"]), f"{r['bytes_per_pixel']:,.0f}"] for r in results]
    common.print_table(
        f"VAE, {args.model} architecture, {args.height}x{args.width}x{args.frames}, "
        f"{device}/{str(dtype).replace('torch.', '')}",
        ["op", "tiling", "median s", "peak +MiB", "bytes / pixel"], rows)
    common.write_json(args.json, NAME, argv, args, device, results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
