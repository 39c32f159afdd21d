"""Peak memory and time of translating clips of several lengths with sliding windows (issue: long clips).

Each length runs in a fresh process so its peak RSS is its own. Tiny random models on the CPU by
default (what CI can run); --models-dir runs the real files (GPU peaks come from
torch.cuda.max_memory_allocated).

    python benchmarks/bench_long_clips.py --frames 49 97 200 --json out/long_clips.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_one(frames: int, size: int, steps: int, models_dir: str | None) -> dict:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from wan_egoexo.models.model_files import find_model_files  # noqa: PLC0415
    from wan_egoexo.pipeline.translation import load_models, translate_frames  # noqa: PLC0415
    from wan_egoexo.sampling.sampler import SamplingSettings  # noqa: PLC0415
    from wan_egoexo.in_context.tasks import EXO2EGO  # noqa: PLC0415
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415
    from wan_egoexo.video.fit import FitOptions  # noqa: PLC0415
    from wan_egoexo.in_context.windows import WindowOptions  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as work:
        if models_dir is None:
            files = build_tiny_models_folder(Path(work), tasks=["exo2ego"])["exo2ego"]
        else:
            files = find_model_files(EXO2EGO, models_dir)
        models = load_models(files, EXO2EGO, log=lambda *_: None)
        clip = np.random.default_rng(0).integers(0, 255, size=(frames, size, size, 3), dtype=np.uint8)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        result = translate_frames(models.transformer, models.vae, models.text_embeds, models.negative_embeds, clip,
                                  8.0, EXO2EGO, fit=FitOptions(width=size, height=size, max_frames=None),
                                  settings=SamplingSettings(steps=steps), windows=WindowOptions(13, 4),
                                  frame_rate="source")
        seconds = time.perf_counter() - start
    return {
        "frames": frames, "size": size, "steps": steps, "output_frames": len(result.frames),
        "latent_frames": int(result.latents.shape[2]), "seconds": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_load_mb": round(rss_before / 1024, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        **{f"{k}_seconds": round(v, 3) for k, v in result.timings.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[49, 97, 200])
    parser.add_argument("--size", type=int, default=64, help="square frame side (multiple of 32)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--models-dir", help="real model files (default: tiny random models)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one length in this process
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.size, args.steps, args.models_dir)))
        return 0
    rows = []
    for frames in args.frames:
        cmd = [sys.executable, __file__, "--one", str(frames), "--size", str(args.size), "--steps", str(args.steps)]
        if args.models_dir:
            cmd += ["--models-dir", args.models_dir]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{'frames':>7} {'latent':>6} {'out':>5} {'time s':>8} {'sample s':>9} {'peak RSS MB':>12} "
          f"{'above load MB':>14} {'x first':>8}")
    for row in rows:
        above = row["peak_rss_mb"] - row["rss_after_load_mb"]
        ratio = above / max(base["peak_rss_mb"] - base["rss_after_load_mb"], 1e-9)
        print(f"{row['frames']:>7} {row['latent_frames']:>6} {row['output_frames']:>5} {row['seconds']:>8.2f} "
              f"{row['sample_seconds']:>9.2f} {row['peak_rss_mb']:>12.1f} {above:>14.1f} {ratio:>8.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
