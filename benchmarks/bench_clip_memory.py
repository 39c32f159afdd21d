"""Peak memory of translating 9 frames from clips of different lengths (issue 10: bounded memory).

The same command, ``python -m wan_egoexo translate --frames 9`` on the tiny random model (CPU), is run
on a short and a long clip of the same size (by default 2 s and 20 s of 1280x704 at 30 fps, made
here with ffmpeg), each in a fresh process, in alternating rounds. A process's peak is read from
os.wait4: the larger of its own peak resident set and that of its largest child (ffmpeg). Before
the streaming reader, the long clip was decoded whole (20 s of 1280x704: 4.0 GB); now both read
only the frames used, so the ratio is about 1.

    python benchmarks/bench_clip_memory.py                  # 2 s vs 20 s of 1280x704
    python benchmarks/bench_clip_memory.py --fast           # CI: 1 s vs 6 s of 640x352, one round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> Path:
    import imageio_ffmpeg  # noqa: PLC0415

    if not path.exists():
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=s={width}x{height}:r={fps}:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def peak_of(cmd: list[str], repo: Path = REPO) -> tuple[float, int]:
    """(peak RSS in MB, exit code) of a command run with ``repo``'s code: the max of its own peak and its
    largest child's."""
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=repo)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
    return usage.ru_maxrss / 1024, process.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs=2, default=[2.0, 20.0], help="short and long clip length")
    parser.add_argument("--size", default="1280x704", help="clip size WxH")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--grid", default="256x128", help="size the 9 frames are translated at (the tiny model)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="1 s vs 6 s of 640x352, one round")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--compare", type=Path, help="another checkout (e.g. before this change) run side by side")
    args = parser.parse_args(argv)
    if args.fast:
        args.seconds, args.size, args.rounds = [1.0, 6.0], "640x352", 1
    width, height = (int(v) for v in args.size.split("x"))
    grid_w, grid_h = args.grid.split("x")
    with tempfile.TemporaryDirectory(prefix="bench_clip_memory_") as work:
        work = Path(work)
        from wan_egoexo.tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415

        build_tiny_models_folder(work / "models", tasks=["exo2ego"])
        clips = [make_clip(work / f"clip_{s:g}s.mp4", s, width, height, args.fps) for s in args.seconds]
        repos = {"this checkout": REPO} | ({f"{args.compare}": args.compare} if args.compare else {})
        peaks = {(name, s): [] for name in repos for s in args.seconds}
        for _ in range(args.rounds):
            for name, repo in repos.items():
                for seconds, clip in zip(args.seconds, clips):
                    cmd = [sys.executable, "-m", "wan_egoexo", "translate", "--video", str(clip), "--out",
                           str(work / "out.mp4"), "--models-dir", str(work / "models"), "--frames", "9", "--steps",
                           "1", "--width", grid_w, "--height", grid_h, "--no-prompt-cache"]
                    peak, code = peak_of(cmd, repo)
                    if code:
                        return code
                    peaks[(name, seconds)].append(peak)
    print(f"peak RSS translating 9 frames of {width}x{height} at {args.fps} fps (tiny model, {args.grid}):")
    ratios = {}
    for name in repos:
        for seconds in args.seconds:
            rounds = ", ".join(f"{p:.1f}" for p in peaks[(name, seconds)])
            print(f"  {name}: {seconds:>5g} s clip: {min(peaks[(name, seconds)]):8.1f} MB  (rounds: {rounds})")
        short, long = (min(peaks[(name, s)]) for s in args.seconds)
        ratios[name] = long / short
        print(f"  {name}: ratio {args.seconds[1]:g} s / {args.seconds[0]:g} s: {ratios[name]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "fps": args.fps, "grid": args.grid,
                                               "peaks_mb": {f"{n}: {s:g} s": v for (n, s), v in peaks.items()},
                                               "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
