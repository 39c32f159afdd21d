"""Benchmark: issue 11's hostile numbers and damaged run-time files, end to end through
``python -m wan_egoexo translate`` on the tiny real-layout models: exit code, message, whether an
output was written (and its mean pixel value: 0 is an all-black video), the run's peak resident
memory and time; plus what a kill -9 in the middle of a write leaves behind after the next write;
plus issue 18's file, ffmpeg and output-memory cases (benchmarks/hostile_outputs.py).

Each case runs in its own process started in ``--code-root`` (default: this checkout), so the same
cases can be measured against an older checkout:

    python -m benchmarks.bench_hostile_runs
    python -m benchmarks.bench_hostile_runs --code-root /path/to/old/checkout --json before.json
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, hostile_outputs

_FILE_FACTS = ("written", "output_shows", "input_intact", "files_after_two_runs", "users_files_left", "first_exit")

NAME = "bench_hostile_runs"
REPO = Path(__file__).resolve().parents[1]
SMALL = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--task", "exo2ego"]


def _nan_weight(models: Path, cache: Path) -> list[str]:
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    path = next((models / "diffusion_models").glob("*.safetensors"))
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    tensors["model.diffusion_model.blocks.0.self_attn.q.weight"][0, 0] = math.nan
    save_file(tensors, str(path))
    return ["--no-prompt-cache"]


def _nan_lora(models: Path, cache: Path) -> list[str]:
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt  # noqa: PLC0415
    from wan_egoexo.tiny.transformer import build_tiny_transformer  # noqa: PLC0415

    state = random_lora_state_dict(build_tiny_transformer(0), rank=4, seed=1)
    state[next(iter(state))][0, 0] = math.nan
    save_worldwander_ckpt(state, next((models / "loras").glob("*.ckpt")))
    return ["--no-prompt-cache"]


def _truncated_lora(models: Path, cache: Path) -> list[str]:
    """The default LoRA cut short, as an interrupted download leaves it (issue 18: found in preflight)."""
    path = next((models / "loras").glob("*.ckpt"))
    path.write_bytes(path.read_bytes()[:-200])
    return ["--no-prompt-cache"]


def _redos_lora(models: Path, cache: Path) -> list[str]:
    """An explicit --lora whose adapter metadata holds a backtracking pattern (issue 18)."""
    from benchmarks.hostile_lora_files import redos_alpha_pattern_safetensors  # noqa: PLC0415

    return ["--no-prompt-cache", "--lora", str(redos_alpha_pattern_safetensors(models / "loras" / "re.safetensors"))]


def _option(*extra):
    return lambda models, cache: ["--no-prompt-cache", *extra]


def _damaged_cache(kind: str):
    """Fill the cache with a first run (of the measured code), then damage every entry."""
    def setup(models: Path, cache: Path, run) -> list[str]:
        run(["--prompt-cache", str(cache)])
        for entry in sorted(cache.glob("*.safetensors")):
            data = bytearray(entry.read_bytes())
            (length,) = struct.unpack("<Q", data[:8])
            if kind == "nan":
                data[8 + length: 12 + length] = struct.pack("<f", math.nan)
            elif kind == "bit":
                data[8 + length + 1] ^= 0x10
            elif kind == "width":
                data = _wrong_width_entry(entry)
            elif kind == "directory":
                entry.unlink()
                entry.mkdir()
                continue
            entry.write_bytes(bytes(data))
        return ["--prompt-cache", str(cache)]
    return setup


def _wrong_width_entry(entry: Path) -> bytes:
    """The same entry with 16-wide rows (a valid file of both entry formats, checksum included)."""
    import torch  # noqa: PLC0415
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import save  # noqa: PLC0415

    with safe_open(str(entry), "pt") as handle:
        metadata, rows = handle.metadata(), handle.get_tensor("embedding")[:, :16].contiguous()
    metadata["sha256"] = hashlib.sha256(rows.numpy().astype("<f4").tobytes()).hexdigest()
    return save({"embedding": rows.to(torch.float32)}, metadata=metadata)


CASES = [
    ("transformer file with one NaN weight", _nan_weight),
    ("LoRA .ckpt with one NaN", _nan_lora),
    ("--cfg inf", _option("--cfg", "inf")),
    ("--shift 1e300", _option("--shift", "1e300")),
    ("--lora-strength 1e30", _option("--lora-strength", "1e30")),
    ("prompt-cache entry: NaN, header intact", _damaged_cache("nan")),
    ("prompt-cache entry: one flipped bit", _damaged_cache("bit")),
    ("prompt-cache entry: wrong width", _damaged_cache("width")),
    ("prompt-cache entry: a directory in its place", _damaged_cache("directory")),
    ("LoRA .ckpt truncated (an interrupted download)", _truncated_lora),
    ("--lora with alpha_pattern key ((.*)*)*Z", _redos_lora),
]

_KILLED_WRITE = """
import sys, time
from pathlib import Path
from wan_egoexo.atomic_files import atomic_path
with atomic_path(Path(sys.argv[1]), keep_suffix=True) as temp:
    temp.write_bytes(b"half a video")
    print("writing", flush=True)
    time.sleep(60)
"""
_NEXT_WRITE = """
import sys
import numpy as np
from wan_egoexo.video.read_write import write_video
write_video(sys.argv[1], np.zeros((3, 32, 32, 3), np.uint8), 8.0)
"""


def _translate(code_root: Path, models: Path, clip: Path, out: Path, extra: list[str], timeout: float = 600) -> dict:
    # /usr/bin/time is not everywhere: the child reports its own peak RSS through a wrapper.
    # Each model loader, when called, says so on stderr (LOADING ...): which stages ran before a failure.
    wrapper = ("import resource, runpy, sys; sys.argv = ['wan_egoexo'] + sys.argv[1:]\n"
               "import wan_egoexo.pipeline.translation as t\n"
               "def said(name, f):\n"
               "    def g(*a, **k):\n        print('LOADING', name, file=sys.stderr, flush=True)\n"
               "        return f(*a, **k)\n    return g\n"
               "for name in ('load_vae', 'load_transformer', '_encode_text'):\n"
               "    setattr(t, name, said(name, getattr(t, name)))\n"
               "try:\n    runpy.run_module('wan_egoexo', run_name='__main__')\n"
               "finally:\n    print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    command = [sys.executable, "-c", wrapper, "translate", "--video", str(clip), "--out", str(out),
               "--models-dir", str(models), *SMALL, *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=code_root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"exit": None, "seconds": timeout, "peak_rss_mib": None, "traceback_lines": 0,
                "message": f"still running after {timeout:.0f} s (killed)"}
    result = {"exit": done.returncode, "seconds": round(time.perf_counter() - start, 2),
              "loaded": [line.split()[1] for line in done.stderr.splitlines() if line.startswith("LOADING ")]}
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KIB")]
    result["peak_rss_mib"] = round(int(peak[-1].split()[1]) / 1024) if peak else None
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()
             and not line.startswith(("PEAK_KIB", "LOADING ")) and "step/s" not in line and "sampling:" not in line]
    errors = [line for line in lines if line.startswith(("error:", "Traceback")) or "Error" in line[:40]]
    result["message"] = (errors[-1] if errors else (lines[-1] if lines else ""))[:400]
    result["traceback_lines"] = sum(1 for line in done.stderr.splitlines() if line.startswith("  File "))
    return result


def _output_summary(out: Path) -> dict:
    leftovers = [p.name for p in out.parent.iterdir() if ".partial" in p.name]
    if not out.exists():
        return {"written": False, "leftovers": leftovers}
    from wan_egoexo.video.read_write import read_video  # noqa: PLC0415

    return {"written": True, "mean_pixel": round(float(read_video(out).frames.mean()), 1), "leftovers": leftovers}


def kill9_case(code_root: Path, work: Path) -> dict:
    folder = work / "kill9"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITE, str(folder / "a.mp4")], cwd=code_root,
                              stdout=subprocess.PIPE, text=True)
    writer.stdout.readline()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    before = sorted(p.name for p in folder.iterdir())
    subprocess.run([sys.executable, "-c", _NEXT_WRITE, str(folder / "b.mp4")], cwd=code_root, check=True)
    after = sorted(p.name for p in folder.iterdir())
    return {"case": "kill -9 during a write, then the next write into the folder", "after_kill": before,
            "after_next_write": after, "leftovers": [name for name in after if ".partial" in name]}


def run(argv=None) -> list[dict]:
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-root", type=Path, default=REPO, help="checkout whose wan_egoexo is measured")
    parser.add_argument("--only", action="append", default=None, help="run only cases containing this text")
    parser.add_argument("--fast", action="store_true", help="CI mode: the LoRA-strength case and the kill -9 case")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is killed")
    args = parser.parse_args(argv)
    if args.fast:
        args.only = ["--lora-strength", "kill", "ffconcat", "--out ./x.mp4", ".bashrc"]
    code_root = args.code_root.resolve()
    results = []
    with tempfile.TemporaryDirectory(prefix="hostile_runs_") as work:
        work = Path(work)
        build_tiny_models_folder(work / "clean_models", tasks=["exo2ego"])
        clip = make_demo_clip(work / "in.mp4", frames=12, width=64, height=64)
        for index, (name, setup) in enumerate(CASES):
            if args.only and not any(text in name for text in args.only):
                continue
            case_dir = work / f"case{index}"
            models, cache, out = case_dir / "models", case_dir / "cache", case_dir / "out" / "o.mp4"
            shutil.copytree(work / "clean_models", models)
            out.parent.mkdir(parents=True)
            if setup.__code__.co_argcount == 3:
                extra = setup(models, cache, lambda e: _translate(code_root, models, clip, case_dir / "first.mp4", e))
            else:
                extra = setup(models, cache)
            row = {"case": name, **_translate(code_root, models, clip, out, extra, args.timeout),
                   **_output_summary(out)}
            results.append(row)
            print(f"{name:<46} exit {row['exit']}  {row['seconds']:>6.1f} s  {row['peak_rss_mib']} MiB  "
                  f"loaded={row.get('loaded')}  "
                  f"written={row['written']} mean={row.get('mean_pixel', '-')}  {row['message'][:150]}", flush=True)
        for index, (name, case) in enumerate(hostile_outputs.CASES):  # issue 18: files, ffmpeg, output memory
            if args.only and not any(text in name for text in args.only):
                continue
            case_dir = work / f"files{index}"
            case_dir.mkdir()
            row = {"case": name, **case(code_root, work / "clean_models", case_dir)}
            results.append(row)
            print(f"{name:<60} exit {row.get('exit')}  {row.get('seconds')} s  {row.get('peak_rss_mib')} MiB "
                  f"(largest child {row.get('child_peak_mib')} MiB)  {row.get('message', row.get('skipped', ''))[:150]}  "
                  + "  ".join(f"{k}={row[k]}" for k in row if k in _FILE_FACTS), flush=True)
        if not args.only or any("kill" in text for text in args.only):
            results.append(kill9_case(code_root, work))
            print(f"{results[-1]['case']}: leftovers {results[-1]['leftovers']}", flush=True)
    common.write_json(args.json, NAME, argv, args, "cpu", results)
    return results


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
