"""Issue 18's file, ffmpeg and output cases for bench_hostile_runs: each builds its inputs in a folder of
its own, runs ``python -m wan_egoexo translate`` (or the batch) on the tiny models in a fresh process
started in the measured checkout, and reports exit code, message, peak RSS (the process's own and its
largest child's, ffmpeg), time, and what happened to the files: which source the output shows, whether
the input or a user's file survived.

Attack clips are flat greys made by the ffmpeg that imageio-ffmpeg ships: the file a trick would open
instead is 128x64, the file actually named 64x48, and the output is restored to its source's size, so
the output's size says which file was read.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg

FF = imageio_ffmpeg.get_ffmpeg_exe()
SMALL = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--task", "exo2ego", "--no-prompt-cache"]
OTHER, NAMED = "128x64", "64x48"  # sizes: the file a trick reads instead, and the file the user named

_WRAPPER = ("import resource, runpy, sys; sys.argv = ['wan_egoexo'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('wan_egoexo', run_name='__main__')\n"
            "finally:\n    print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n"
            "          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")


def grey_clip(path: Path, size: str, seconds: float = 1.0, fmt=("-c:v", "libx264")) -> Path:
    subprocess.run([FF, "-hide_banner", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=c=gray:s={size}:r=8:d={seconds}", *fmt, "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def cli(code_root: Path, models: Path, args: list[str], cwd: Path | None = None, limit_as: int | None = None) -> dict:
    small = [a for a in SMALL if a != "--no-prompt-cache"] if "--prompt-cache" in args else SMALL
    command = [sys.executable, "-c", _WRAPPER, "translate", "--models-dir", str(models), *small, *args]
    if limit_as:  # an address-space cap (GiB), so a run that would take all the machine's memory fails instead
        command = ["bash", "-c", f'ulimit -v {int(limit_as) << 20}; exec "$@"', "bash", *command]
    env = dict(os.environ, PYTHONPATH=str(code_root))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd or code_root, capture_output=True, text=True, env=env)
    row = {"exit": done.returncode, "seconds": round(time.perf_counter() - start, 1)}
    peak = [line.split() for line in done.stderr.splitlines() if line.startswith("PEAK_KIB")]
    row["peak_rss_mib"] = round(int(peak[-1][1]) / 1024) if peak else None
    row["child_peak_mib"] = round(int(peak[-1][2]) / 1024) if peak else None
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()
             and not line.startswith("PEAK_KIB") and "step/s" not in line and "sampling:" not in line]
    errors = [line for line in lines if line.startswith(("error:", "Traceback")) or "Error" in line[:40]]
    row["message"] = (errors[-1] if errors else (lines[-1] if lines else ""))[:300]
    row["traceback_lines"] = sum(1 for line in done.stderr.splitlines() if line.startswith("  File "))
    return row


def output_size(path: Path):
    if not path.exists():
        return None
    from wan_egoexo.video.probe import probe_video_file  # noqa: PLC0415

    probe = probe_video_file(path, audio=False)
    return f"{probe.width}x{probe.height}"


def _read(row: dict, out: Path) -> dict:
    size = output_size(out)
    row["written"] = size is not None
    row["output_shows"] = None if size is None else ("the OTHER file" if size == OTHER else "the named file")
    return row


# ---------------------------------------------------------------- ffmpeg reads only the named file

def hls_playlist(code_root, models, work: Path) -> dict:
    (work / "outside").mkdir()
    inside = work / "inside"
    inside.mkdir()
    grey_clip(work / "outside" / "secret.ts", OTHER, fmt=("-c:v", "libx264", "-f", "mpegts"))
    (inside / "evil.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n../outside/secret.ts\n"
                                      "#EXT-X-ENDLIST\n")
    out = work / "o.mp4"
    return _read(cli(code_root, models, ["--video", str(inside / "evil.m3u8"), "--out", str(out), "--fit", "stretch"]), out)


def hls_named_mp4(code_root, models, work: Path) -> dict:
    grey_clip(work / "secret.ts", OTHER, fmt=("-c:v", "libx264", "-f", "mpegts"))
    (work / "clip.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nsecret.ts\n#EXT-X-ENDLIST\n")
    out = work / "o.mp4"
    return _read(cli(code_root, models, ["--video", str(work / "clip.mp4"), "--out", str(out), "--fit", "stretch"]), out)


def ffconcat_mp4(code_root, models, work: Path) -> dict:
    grey_clip(work / "private.mp4", OTHER)
    (work / "clip.mp4").write_text("ffconcat version 1.0\nfile private.mp4\n")
    out = work / "o.mp4"
    return _read(cli(code_root, models, ["--video", str(work / "clip.mp4"), "--out", str(out), "--fit", "stretch"]), out)


def protocol_name(name: str):
    def case(code_root, models, work: Path) -> dict:
        grey_clip(work / "x.mp4", OTHER)
        grey_clip(work / "named.mp4", NAMED)
        os.replace(work / "named.mp4", work / name)  # the literal file of that name
        out = work / "o.mp4"
        return _read(cli(code_root, models, ["--video", name, "--out", str(out), "--fit", "stretch"], cwd=work), out)
    return case


# ---------------------------------------------------------------- output memory

def big_canvas_gif(side: int, limit_as: int | None = None):
    """A GIF of a few KB whose logical screen is side x side: ffmpeg decodes every frame at that size."""
    def case(code_root, models, work: Path) -> dict:
        from PIL import Image  # noqa: PLC0415

        frames = [Image.new("L", (16, 16), 20 * i) for i in range(10)]  # ten distinct frames, 0.1 s each
        path = work / "canvas.gif"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
        data = bytearray(path.read_bytes())
        data[6:10] = struct.pack("<HH", side, side)
        path.write_bytes(bytes(data))
        out = work / "o.mp4"
        row = cli(code_root, models, ["--video", str(path), "--out", str(out)], limit_as=limit_as)
        row["input_bytes"] = path.stat().st_size
        row["written"] = out.exists()
        return row
    return case


def clip_4k(seconds: float):
    def case(code_root, models, work: Path) -> dict:
        path = work / "uhd.mp4"
        subprocess.run([FF, "-hide_banner", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=s=3840x2160:r=30:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        out = work / "o.mp4"
        row = cli(code_root, models, ["--video", str(path), "--out", str(out), "--frames", "9"])
        row["written"] = out.exists()
        return row
    return case


# ---------------------------------------------------------------- the user's files

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def out_is_input(code_root, models, work: Path) -> dict:
    from wan_egoexo.tiny.models_folder import make_demo_clip  # noqa: PLC0415

    clip = make_demo_clip(work / "x.mp4", frames=12, width=64, height=64)
    before = _digest(clip)
    row = cli(code_root, models, ["--video", "x.mp4", "--out", "./x.mp4"], cwd=work)
    row["input_intact"] = _digest(clip) == before
    return row


def batch_into_its_own_folder(code_root, models, work: Path) -> dict:
    from wan_egoexo.tiny.models_folder import make_demo_clip  # noqa: PLC0415

    folder = work / "clips"
    folder.mkdir()
    make_demo_clip(folder / "walk.mp4", frames=12, width=64, height=64)
    first = cli(code_root, models, ["--video", str(folder), "--out", str(folder)])
    second = cli(code_root, models, ["--video", str(folder), "--out", str(folder)])
    row = {**second, "first_exit": first["exit"], "first_message": first["message"][:200],
           "files_after_two_runs": sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))}
    row["seconds"] = round(first["seconds"] + second["seconds"], 1)
    return row


def users_dotfiles(code_root, models, work: Path) -> dict:
    from wan_egoexo.tiny.models_folder import make_demo_clip  # noqa: PLC0415

    clip = make_demo_clip(work / "in.mp4", frames=12, width=64, height=64)
    out_dir = work / "out"
    out_dir.mkdir()
    (out_dir / ".bashrc.old-1").write_text("alias ll='ls -l'\n")
    (out_dir / ".photos.old-2020").mkdir()
    (out_dir / ".photos.old-2020" / "a.jpg").write_bytes(b"jpeg")
    old = time.time() - 2 * 86400
    for path in (out_dir / ".bashrc.old-1", out_dir / ".photos.old-2020"):
        os.utime(path, (old, old))
    row = cli(code_root, models, ["--video", str(clip), "--out", str(out_dir / "o.mp4")])
    row["users_files_left"] = sorted(p.name for p in out_dir.iterdir() if p.name.startswith("."))
    return row


def _tmpfs(folder: Path, size: str, read_only: bool = False, inodes: int | None = None) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "") + (f",nr_inodes={inodes}" if inodes else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


def prompt_cache_unwritable(read_only: bool):
    def case(code_root, models, work: Path) -> dict:
        from wan_egoexo.tiny.models_folder import make_demo_clip  # noqa: PLC0415

        clip = make_demo_clip(work / "in.mp4", frames=12, width=64, height=64)
        cache = work / "cache"
        # full: no inode left, so no entry can be created (ENOSPC); read-only: EROFS
        if not _tmpfs(cache, "64k", read_only, inodes=None if read_only else 1):
            return {"skipped": "needs root to mount a tmpfs"}
        try:
            args = ["--video", str(clip), "--out", str(work / "o.mp4"), "--prompt-cache", str(cache)]
            row = cli(code_root, models, args, cwd=work)
            row["written"] = (work / "o.mp4").exists()
            return row
        finally:
            _umount(cache)
    return case


def output_disk_full(code_root, models, work: Path) -> dict:
    from wan_egoexo.tiny.models_folder import make_demo_clip  # noqa: PLC0415

    clip = make_demo_clip(work / "in.mp4", frames=12, width=256, height=256)
    out_dir = work / "full"
    if not _tmpfs(out_dir, "64k"):
        return {"skipped": "needs root to mount a tmpfs"}
    try:
        with open(out_dir / "filler", "wb", buffering=0) as filler:  # fill the disk to its last block
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        return cli(code_root, models, ["--video", str(clip), "--out", str(out_dir / "o.mp4"), "--fit", "stretch"])
    finally:
        _umount(out_dir)


def symlink_loop(code_root, models, work: Path) -> dict:
    (work / "loop.mp4").symlink_to("loop.mp4")
    return cli(code_root, models, ["--video", "loop.mp4", "--out", "o.mp4"], cwd=work)


CASES = [
    ("HLS playlist evil.m3u8 naming ../outside/secret.ts", hls_playlist),
    ("HLS playlist saved as clip.mp4", hls_named_mp4),
    ("ffconcat script saved as clip.mp4 (same-folder file)", ffconcat_mp4),
    ("name file:x.mp4 (x.mp4 beside it)", protocol_name("file:x.mp4")),
    ("name concat:x.mp4", protocol_name("concat:x.mp4")),
    ("name subfile,,start,0,end,0,,:x.mp4", protocol_name("subfile,,start,0,end,0,,:x.mp4")),
    ("GIF, 2000x2000 canvas", big_canvas_gif(2000)),
    ("GIF, 4000x4000 canvas", big_canvas_gif(4000)),
    ("GIF, 8000x8000 canvas, under a 10 GiB address-space cap", big_canvas_gif(8000, 10)),
    ("4K clip, 3 s at 30 fps, --frames 9, --output-rate source", clip_4k(3.0)),
    ("--video x.mp4 --out ./x.mp4", out_is_input),
    ("batch: --out is the input folder, run twice", batch_into_its_own_folder),
    ("out folder holds .bashrc.old-1 and .photos.old-2020/ (2 days old)", users_dotfiles),
    ("prompt cache on a full disk", prompt_cache_unwritable(False)),
    ("prompt cache on a read-only file system", prompt_cache_unwritable(True)),
    ("--out on a full disk", output_disk_full),
    ("--video is a symbolic link loop", symlink_loop),
]
