"""Shared pieces of the benchmark scripts: arguments, model and input construction, timing with
interleaved rounds, peak-memory measurement, the printed table and the JSON record.

Peak memory: on CUDA, torch.cuda.max_memory_allocated after a reset (what PyTorch's allocator
handed out; the CUDA context is extra). On the CPU, the process's peak resident set (VmHWM),
reset before each measurement through /proc/self/clear_refs; glibc's malloc is told to serve
every block above 64 KiB with mmap (mallopt M_MMAP_THRESHOLD), so freed tensors leave the resident
set at once and the peak is the peak of live memory, not of malloc's free lists.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

_M_MMAP_THRESHOLD = -3


def _set_malloc_threshold() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 64 * 1024))
    except OSError:  # not glibc
        return False


MALLOC_THRESHOLD_SET = _set_malloc_threshold()


def add_common_args(parser: argparse.ArgumentParser, height=64, width=96, frames=9) -> argparse.ArgumentParser:
    parser.add_argument("--fast", action="store_true", help="CI mode: tiny model, tiny size, 1 warm-up, 2 rounds")
    parser.add_argument("--model", choices=("tiny", "5b"), default="tiny",
                        help="tiny random model, or the real Wan2.2-TI2V-5B config with random weights")
    parser.add_argument("--layers", type=int, default=None, help="override the number of blocks (5b on the CPU)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the first GPU, else the CPU)")
    parser.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--height", type=int, default=height)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--frames", type=int, default=frames, help="video frames (4k+1)")
    parser.add_argument("--task", choices=("exo2ego", "ego2exo"), default="exo2ego")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (default: print only)")
    return parser


def apply_fast(args) -> None:
    """--fast: the smallest meaningful run (CI keeps the scripts from rotting, not the numbers)."""
    if args.fast:
        args.model, args.layers = "tiny", None
        args.height, args.width, args.frames = 32, 64, 5
        args.warmup, args.rounds = 1, 2


def setup(args):
    from wan_egoexo.devices import resolve_device, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    return device, dtype


def cast_like_loader(model, dtype):
    """The loader's dtype policy: diffusers' float32 modules stay float32, the rest in ``dtype``."""
    keep = set(type(model)._keep_in_fp32_modules or [])
    for name, param in model.named_parameters():
        if not any(part in keep for part in name.split(".")):
            param.data = param.data.to(dtype)
    return model


def build_transformer(args, device, dtype, seed: int = 0):
    """A WanTransformer3DModel on ``device``: the tiny random model, or the real 5B config with
    random weights (built directly on the device; nothing is downloaded)."""
    from diffusers import WanTransformer3DModel

    from wan_egoexo.memory.flops import WAN22_5B_CONFIG
    from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG

    config = dict(TINY_TRANSFORMER_CONFIG if args.model == "tiny" else WAN22_5B_CONFIG)
    if args.layers:
        config["num_layers"] = args.layers
    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return cast_like_loader(model, dtype).eval().requires_grad_(False)


def twin(transformer):
    """A second model object sharing every weight tensor with ``transformer`` (no extra memory), so
    hooks can be installed on one and not the other."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        clone = type(transformer)(**dict(transformer.config))
    clone.load_state_dict(transformer.state_dict(), strict=True, assign=True)
    clone.rope.to(transformer.rope.freqs_cos.device)
    return clone.eval().requires_grad_(False)


def latent_inputs(args, transformer, batch: int, device, seed: int = 0):
    """(target, source, reference or None, text) for the in-context forward at the args' size."""
    from wan_egoexo.in_context.latents import latent_shape

    frames, height, width = latent_shape(args.frames, args.height, args.width)
    channels = transformer.config.in_channels
    generator = torch.Generator().manual_seed(seed)

    def noise(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    target = noise(batch, channels, frames, height, width)
    source = noise(batch, channels, frames, height, width)
    reference = noise(batch, channels, 1, height, width) if args.task == "ego2exo" else None
    text = noise(batch, 512, transformer.config.text_dim)
    return target, source, reference, text


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def peak_memory(device, collect: bool = True):
    """Yields a dict filled on exit with peak_bytes (absolute) and delta_bytes (above the start).
    ``collect=False`` skips the garbage collection first (0.5 s in a process with diffusers loaded;
    the fuzz tests wrap hundreds of small reads)."""
    result = {}
    if collect:
        gc.collect()
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result.update(kind="cuda_max_allocated", peak_bytes=peak, delta_bytes=peak - start)
        return
    start = _proc_status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    yield result
    peak = _proc_status("VmHWM")
    if peak is None or start is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = 0
    result.update(kind="cpu_peak_rss" if resettable else "cpu_peak_rss_since_start", peak_bytes=peak,
                  delta_bytes=max(0, peak - start))


def time_call(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(fns: dict, device, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``rounds`` rounds in alternating order (the order
    is reversed every other round), so drifting machine load hits every variant alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    times = {name: [] for name in names}
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            times[name].append(time_call(fns[name], device))
    return times


def median(values) -> float:
    return float(statistics.median(values))


def mib(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:,.0f}"


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for number, row in enumerate(cells):
        print("  ".join(value.rjust(width) if i else value.ljust(width) for i, (value, width) in
                        enumerate(zip(row, widths))))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def environment(device) -> dict:
    device = torch.device(device)
    info = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
        "malloc_mmap_threshold_set": MALLOC_THRESHOLD_SET,
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line(name: str, argv) -> str:
    """The command that reproduces a run, as docs/performance.md quotes it."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return " ".join([f"python -m benchmarks.{name}"] + arguments)


def write_json(path, name: str, argv, args, device, results) -> None:
    if path is None:
        return
    payload = {
        "benchmark": name,
        "command": command_line(name, argv),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(device),
        "results": results,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
