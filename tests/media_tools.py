"""Real clips for the tests, made with the ffmpeg that imageio-ffmpeg ships, and measurements of
written files taken with ffmpeg directly (not through the project's reader).

Frame i of a made clip is a flat grey of level ``level(i)`` with a white marker in its top-left
quarter, so a test can tell from the pixels which source frame an output frame shows and which way
up it is.
"""

from __future__ import annotations

import re
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def level(index: int) -> int:
    """Grey level of frame ``index`` (distinct for up to 48 frames, 5 levels apart; then it wraps)."""
    return 10 + 5 * (index % 48)


def frame_index(frame: np.ndarray) -> int:
    """Which frame (mod 48) a decoded frame shows, from the grey of its lower half."""
    grey = float(frame[frame.shape[0] // 2:].mean())
    return int(round((grey - 10) / 5)) % 48


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), level(index), np.uint8)
    image[: height // 4, : width // 4] = 255  # top-left marker: shows orientation
    return image


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FFMPEG, "-hide_banner", "-y", "-loglevel", "error", *args], check=True,
                          capture_output=True)


def make_clip(path, times, width=64, height=48, audio=None, audio_seconds=None, extra=()) -> Path:
    """A clip whose frame i is shown from ``times[i]`` (seconds) to ``times[i + 1]`` (the last for the
    typical spacing). ``audio``: None, or an ffmpeg audio codec ("aac", "pcm_s16le", "libvorbis", ...)
    for a 440 Hz tone lasting ``audio_seconds`` (default: the clip's length)."""
    path = Path(path)
    work = path.parent / f".{path.stem}_frames"
    work.mkdir(parents=True, exist_ok=True)
    times = [float(t) for t in times]
    last = times[-1] - times[-2] if len(times) > 1 else 0.125
    lines = ["ffconcat version 1.0"]
    for i, start in enumerate(times):
        name = work / f"{i:05d}.png"
        Image.fromarray(frame_image(i, width, height)).save(name)
        end = times[i + 1] if i + 1 < len(times) else start + last
        lines += [f"file '{name.name}'", "option framerate 1000", f"duration {end - start:.6f}"]
    listing = work / "list.ffconcat"
    listing.write_text("\n".join(lines) + "\n")
    inputs = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    maps = ["-map", "0:v"]
    if audio:
        seconds = audio_seconds if audio_seconds is not None else times[-1] + last - times[0]
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        maps += ["-map", "1:a", "-c:a", audio]
    codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast"]
    if path.suffix == ".webm":
        codec = ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "30"]
    run(*inputs, *maps, *codec, "-fps_mode", "vfr", "-video_track_timescale", "90000", *extra, str(path))
    for file in work.iterdir():
        file.unlink()
    work.rmdir()
    return path


def constant_times(count: int, fps: float, start: float = 0.0) -> list[float]:
    return [start + i / fps for i in range(count)]


# ---------------------------------------------------------------- measuring written files

def _streams(path) -> dict:
    """{stream index: (kind, time base, [(pts, duration), ...])} from ffmpeg's framecrc of copied packets."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path), "-map", "0", "-c", "copy", "-f", "framecrc", "-"],
                         capture_output=True, text=True, check=True).stdout
    streams: dict = {}
    for match in re.finditer(r"^#tb (\d+): (\S+)$", out, re.MULTILINE):
        streams[int(match.group(1))] = ["?", Fraction(match.group(2)), []]
    for match in re.finditer(r"^#media_type (\d+): (\w+)$", out, re.MULTILINE):
        streams[int(match.group(1))][0] = match.group(2)
    for line in out.splitlines():
        if line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            streams[int(fields[0])][2].append((int(fields[2]), int(fields[3])))
    return streams


def measure(path) -> dict:
    """Duration, frame count and size (as displayed) of the video stream, and the audio's codec and length,
    of a file (the video's duration counts the last frame as lasting the typical spacing: exact for what
    the project writes, which is constant-rate)."""
    result = {"audio_seconds": None, "audio_codec": None}
    text = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    for index, (kind, base, packets) in _streams(path).items():
        if kind == "video":  # first to last frame, plus the typical spacing for the last one
            pts = np.sort([p for p, _ in packets])
            result["frames"] = len(pts)
            last = np.median(np.diff(pts)) if len(pts) > 1 else packets[0][1]
            result["video_seconds"] = float((pts[-1] - pts[0] + last) * base)
        elif kind == "audio":
            result["audio_seconds"] = decoded_audio_seconds(path)
            match = re.search(r"Audio: (\w+)", text)
            result["audio_codec"] = match.group(1) if match else "?"
    match = re.search(r"Video: .*?, (\d+)x(\d+)", text)
    result["width"], result["height"] = int(match.group(1)), int(match.group(2))
    if re.search(r"rotation of -?(90|270)", text):  # as displayed
        result["width"], result["height"] = result["height"], result["width"]
    return result


def decoded_audio_seconds(path) -> float:
    """Length of the first audio stream as decoded (samples / rate), edit lists and priming applied."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                          "-f", "s16le", "-ac", "1", "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return len(out) / 2 / 48000


def decoded_frames(path) -> np.ndarray:
    """Every frame of a file as ffmpeg decodes it (rotation applied, no frame rate conversion)."""
    text = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    out = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    size = re.search(r"Video: .*?, (\d+)x(\d+)", text)
    width, height = int(size.group(1)), int(size.group(2))
    if re.search(r"rotation of -?(90|270)", text):
        width, height = height, width
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)
