"""``python -m wan_egoexo_training.benchmark_step --config CFG [--steps 10] [--warmup 2] [--section.option VALUE ...]``

Builds the run exactly as training does (nothing is written to output_dir), runs warm-up steps, then
times ``--steps`` optimizer steps and prints one JSON object: median / mean step time, samples per
second, tokens per sample, and peak memory (torch.cuda.max_memory_allocated on GPU, the process's
peak RSS on CPU, loading included).

``--tiny`` runs self-contained on tiny random models (real file layouts) and a generated synthetic
dataset in a temporary folder: 64x64, 9 frames, rank 4, from videos or (``--tiny-source cache``)
from a prepared cache.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .config import TrainingConfig, apply_values, build_parser, config_from_args

TINY = {
    "device": "cpu",
    "data": {"num_frames": 9, "frame_stride": 2, "height": 64, "width": 64, "resize_long": 64, "num_workers": 0},
    "lora": {"rank": 4, "alpha": 4},
    "train": {"batch_size": 2, "mixed_precision": "no"},
    "logging": {"progress_bar": False, "tensorboard": "off"},
}


def tokens_per_sample(config: TrainingConfig, uses_reference: bool) -> int:
    latent_frames = (config.data.num_frames - 1) // 4 + 1
    per_frame = (config.data.height // 32) * (config.data.width // 32)
    return (2 * latent_frames + (1 if uses_reference else 0)) * per_frame


def _tiny_setup(config: TrainingConfig, folder: Path, source: str) -> None:
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415

    from .prepare import prepare_cache  # noqa: PLC0415
    from .data.synthetic import write_synthetic_dataset  # noqa: PLC0415

    apply_values(config, TINY, "--tiny")
    build_tiny_models_folder(folder / "models", tasks=(config.task,))
    write_synthetic_dataset(folder / "data", pairs=4, frames=24, size=64)
    apply_values(config, {"output_dir": str(folder / "out"), "model": {"models_dir": str(folder / "models")},
                          "data": {"root": str(folder / "data")}}, "--tiny")
    if source == "cache":
        apply_values(config, {"data": {"cache": str(folder / "cache")}}, "--tiny")
        prepare_cache(config)
    config.validate()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(config: TrainingConfig, steps: int, warmup: int) -> dict:
    from .run.loop import make_loader, training_step  # noqa: PLC0415
    from .run.session import build_session  # noqa: PLC0415

    session = build_session(config)
    device = session.context.device
    batches = iter(make_loader(session))
    for _ in range(warmup):
        training_step(session, batches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _sync(device)
        started = time.perf_counter()
        training_step(session, batches)
        _sync(device)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    samples = config.train.batch_size * config.train.grad_accum
    report = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "task": session.task.name,
        "source": "cache" if config.data.cache else "videos",
        "size": f"{config.data.width}x{config.data.height}x{config.data.num_frames}",
        "tokens_per_sample": tokens_per_sample(config, session.task.uses_reference),
        "batch_per_step": samples,
        "lora_rank": config.lora.rank,
        "lora_parameters": sum(p.numel() for p in session.lora_params),
        "gradient_checkpointing": config.train.gradient_checkpointing,
        "mixed_precision": config.train.mixed_precision,
        "steps_timed": steps,
        "step_time_median_s": round(median, 4),
        "step_time_mean_s": round(statistics.fmean(times), 4),
        "samples_per_s": round(samples / median, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        report["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return report


def main(argv=None) -> int:
    parser = build_parser("python -m wan_egoexo_training.benchmark_step", "Time training steps and report peak memory.")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and a generated dataset (CPU)")
    parser.add_argument("--tiny-source", choices=["video", "cache"], default="video")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="wan-egoexo-bench-") as work:
        if args.tiny:
            _tiny_setup(config, Path(work), args.tiny_source)
        print(json.dumps(benchmark(config, args.steps, args.warmup), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
