"""What the translate command does to time, sound and size, clip kind by clip kind (issue 10's table).

Each kind of clip a phone, an editor or a screen recorder produces is made here with the ffmpeg that
imageio-ffmpeg ships, translated by ``python -m wan_egoexo translate`` on the tiny random model
(CPU), and both files are measured with ffmpeg itself: video duration, frame count, size, and the
audio's codec and decoded length. Prints a markdown table.

    python benchmarks/bench_clip_kinds.py [--kinds vfr dropped ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from media_tools import FFMPEG, constant_times, make_clip, measure  # noqa: E402

SMALL = ["--width", "64", "--height", "64", "--fit", "pad"]  # the tiny model at a cheap size; pad keeps the size


def _vfr_times():  # 49 frames over 3.83 s: 24 at 30 fps, then 25 about 8 fps apart (the example)
    return constant_times(24, 30.0) + [0.8 + (k + 1) * 3.03 / 25 for k in range(25)]


def _rotated(path: Path) -> Path:
    plain = make_clip(path.with_name("plain_for_rotation.mp4"), constant_times(60, 30.0), width=320, height=180,
                      audio="aac")
    subprocess.run([FFMPEG, "-y", "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(path)], check=True)
    return path


def _truncated(path: Path) -> Path:
    whole = make_clip(path.with_name("whole.mp4"), constant_times(90, 30.0), width=320, height=180, audio="aac",
                      extra=["-crf", "0", "-movflags", "+faststart"])
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


def _broken_rate(path: Path) -> Path:
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x48:r=1/500", "-frames:v",
                    "1", "-c:v", "libx264", str(path)], check=True)
    return path


def _long(path: Path) -> Path:
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=1280x704:r=30:d=20", "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=20", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                    "yuv420p", "-c:a", "aac", str(path)], check=True)
    return path


def _sized(width: int, height: int):
    def make(path: Path) -> Path:  # FFV1 in Matroska, so odd sizes are stored as they are
        even = f"{width + width % 2}x{height + height % 2}"  # testsrc2 draws even sizes; scale to the odd one
        subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s={even}:r=30:d=0.5", "-vf",
                        f"scale={width}:{height},setsar=1", "-c:v", "ffv1", "-pix_fmt",
                        "yuv420p" if width % 2 == height % 2 == 0 else "yuv444p", str(path)], check=True)
        return path
    return make


# kind: (file name, maker, extra translate options, what it shows)
KINDS = {
    "constant": ("cfr.mp4", lambda p: make_clip(p, constant_times(90, 30.0), 320, 180, audio="aac"), SMALL,
                 "30 fps, AAC"),
    "vfr": ("vfr.mp4", lambda p: make_clip(p, _vfr_times(), 320, 180, audio="aac"), SMALL, "variable rate, AAC"),
    "dropped": ("dropped.mp4", lambda p: make_clip(p, [i / 30 for i in range(90) if i % 5 != 4], 320, 180,
                                                   audio="aac"), SMALL, "30 fps, every 5th frame missing"),
    "pcm": ("pcm.mov", lambda p: make_clip(p, constant_times(48, 24.0), 320, 180, audio="pcm_s16le"), SMALL,
            "PCM audio (re-encoded to AAC)"),
    "rotated": ("rotated.mp4", _rotated, SMALL, "phone portrait: 320x180 + rotation 90"),
    "truncated": ("truncated.mp4", _truncated, SMALL, "cut at half its bytes"),
    "broken_rate": ("slow.mp4", _broken_rate, SMALL, "one frame stated at 0.002 fps"),
    "long": ("long.mp4", _long, [*SMALL, "--frames", "9"], "20 s of 1280x704, 9 frames translated"),
    "1920x1080": ("hd.mkv", _sized(1920, 1080), ["--frames", "5"], "automatic grid size, crop"),
    "1440x1080": ("43.mkv", _sized(1440, 1080), ["--frames", "5"], "automatic grid size, crop"),
    "1080x1920": ("portrait.mkv", _sized(1080, 1920), ["--frames", "5"], "automatic grid size, crop"),
    "321x187": ("odd.mkv", _sized(321, 187), ["--frames", "5"], "automatic grid size, crop"),
}


def describe(m: dict) -> str:
    audio = "none" if m["audio_seconds"] is None else f"{m['audio_codec']} {m['audio_seconds']:.3f} s"
    return f"{m['video_seconds']:.3f} s / {m['frames']} / {m['width']}x{m['height']} / {audio}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory(prefix="clip_kinds_") as work:
        work = Path(work)
        build_tiny_models_folder(work / "models", tasks=["exo2ego"])
        for kind in args.kinds:
            name, maker, options, what = KINDS[kind]
            clip = maker(work / name)
            out = work / f"out_{kind}.mp4"
            cmd = [sys.executable, "-m", "wan_egoexo", "translate", "--video", str(clip), "--out", str(out),
                   "--models-dir", str(work / "models"), "--steps", "1", *options]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            row = {"kind": kind, "what": what, "options": " ".join(options), "input": measure(clip),
                   "output": measure(out), "warnings": [w.split(": ", 2)[-1] for w in warnings]}
            rows.append(row)
            print(f"| {kind} ({what}) | {describe(row['input'])} | {describe(row['output'])} | "
                  f"`{row['options']}` | {'; '.join(row['warnings']) or '-'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
