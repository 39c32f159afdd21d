"""What a video file holds, learnt without decoding a frame: its size as displayed, the
presentation timestamp of every frame, and its audio stream.

The ffmpeg binary that imageio-ffmpeg ships copies the packets of the first video stream (and of
the first audio stream) to its ``framecrc`` muxer: one line per packet with its timestamps, and a
header naming each stream's time base, codec, size and sample rate. Copying decodes nothing, so a
five-minute clip is probed in about the time it takes to read the file, and the per-frame
timestamps are exact (no frame rate is assumed). The few facts framecrc does not carry (display
rotation, the container's duration, the channel count) come from ffmpeg's stream report on stderr.

ffmpeg runs as a child process: a hostile file that makes a demuxer or decoder misbehave costs
that process, not this one, and every failure becomes an InputError in a user's words. ffmpeg opens
the named file and nothing else (containers.input_args: a file: URL, protocol and format whitelists).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from .containers import check_regular_file, check_video_name, input_args
from .ffmpeg_process import FfmpegProcess, ffmpeg_problem

NOPTS = -(2**63)  # AV_NOPTS_VALUE as framecrc prints it
_DISCARD = 0x4  # AV_PKT_FLAG_DISCARD: a packet decoded only as a reference (edit lists), never shown
MAX_SOURCE_PIXELS = 8192 * 8192  # 67 Mpx: 8K video and most camera stills; ffmpeg is held to it too
PROBE_TIMEOUT_S = 600  # reading a multi-gigabyte file over a slow disk stays well inside this
MAX_PACKETS = 2_000_000  # about 18 hours at 30 fps; the packet table costs 16 bytes a frame

_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4, "quad(side)": 4,
             "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6, "6.0(front)": 6,
             "hexagonal": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7, "7.0": 7, "7.0(front)": 7, "7.1": 8,
             "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8, "downmix": 2}

def check_source_pixels(path, width: int, height: int) -> None:
    """Refuse frames larger than MAX_SOURCE_PIXELS before anything is decoded."""
    if width * height > MAX_SOURCE_PIXELS:
        raise InputError(f"{path}: frames of {width}x{height} ({width * height / 1e6:.0f} Mpx) are larger than "
                         f"the {MAX_SOURCE_PIXELS / 1e6:.0f} Mpx (8192x8192) this reader decodes; scale the "
                         "clip down first (the model works at about 1 Mpx).")


@dataclass(frozen=True)
class AudioStream:
    """The first audio stream: codec, rate, channels, and the span its packets cover (seconds)."""

    codec: str
    sample_rate: int
    channels: int
    start: float
    end: float


@dataclass(frozen=True)
class VideoProbe:
    """A video file's first (non-cover-art) video stream, frames in presentation order.

    ``pts`` and ``durations`` are in ``time_base`` ticks from the file's start. ``has_pts`` is False
    when the container stores no presentation times (AVI): ``pts`` then holds decode times, which
    count frames but cannot identify decoded frames. ``damage`` is ffmpeg's complaint when reading
    stopped early (a truncated or corrupt file), else None.
    """

    path: str
    width: int
    height: int
    rotation: int
    codec: str
    stated_fps: float
    declared_duration: float | None
    time_base: Fraction
    pts: np.ndarray
    durations: np.ndarray
    has_pts: bool
    damage: str | None
    audio: AudioStream | None

    @property
    def num_frames(self) -> int:
        return int(self.pts.shape[0])

    def seconds(self, ticks) -> np.ndarray:
        return np.asarray(ticks, dtype=np.float64) * float(self.time_base)


def _section(stderr: str, title: str) -> list[str]:
    """The lines of the "Input #0" or "Output #0" block of ffmpeg's report."""
    lines, inside = [], False
    for line in stderr.splitlines():
        if line.startswith(title):
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        if inside:
            lines.append(line)
    return lines


def _stream_block(lines: list[str], stream: str) -> list[str]:
    """The lines describing input stream ``stream`` ("0:1"): its Stream line and the indented lines below it."""
    block = []
    for line in lines:
        if re.match(rf"\s*Stream #{re.escape(stream)}\b", line):
            block = [line]
        elif block and re.match(r"\s*Stream #", line):
            break
        elif block:
            block.append(line)
    return block


def _mapped_stream(stderr: str, output_index: int) -> str | None:
    match = re.search(rf"Stream #(\d+:\d+) -> #0:{output_index}\b", stderr)
    return match.group(1) if match else None


def _rotation(block: list[str]) -> int:
    """Display rotation in degrees, folded to 0/90/180/270 (its sign does not change the displayed size)."""
    text = "\n".join(block)
    match = re.search(r"rotation of (-?[\d.]+) degrees", text, re.IGNORECASE) or \
        re.search(r"\brotate\s*:\s*(-?[\d.]+)", text)
    return int(round(float(match.group(1)))) % 360 if match else 0


def _stated_fps(block: list[str]) -> float:
    match = re.search(r"([\d.]+)(k?) fps", block[0]) if block else None
    if not match:
        return 0.0
    return float(match.group(1)) * (1000.0 if match.group(2) else 1.0)


def _declared_duration(stderr: str) -> float | None:
    match = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _channels(block: list[str], layout: str | None) -> int:
    if layout in _CHANNELS:
        return _CHANNELS[layout]
    text = block[0] if block else ""
    match = re.search(r"(\d+) channels", text) or re.search(r"Hz, (\d+) channels", text)
    if match:
        return int(match.group(1))
    for name, count in sorted(_CHANNELS.items(), key=lambda item: -len(item[0])):
        if re.search(rf"Hz, {re.escape(name)}\b", text):
            return count
    return 2


def _read_framecrc(ff: FfmpegProcess, path, deadline: float) -> tuple[dict, dict[int, np.ndarray]]:
    """(header, {stream: int64 array [packets, 4] of (dts, pts, duration, flags)}) from framecrc's output,
    read as it comes; more than MAX_PACKETS packets (or the time limit) stops ffmpeg with an InputError."""
    header_lines, rows = [], {}
    count = 0
    for raw in ff.stdout:
        line = raw.decode("ascii", "replace").strip()
        if line.startswith("#"):
            header_lines.append(line)
            continue
        count += 1
        if count > MAX_PACKETS:
            raise InputError(f"{path}: holds more than {MAX_PACKETS:,} packets; expected a video of at most "
                             f"{MAX_PACKETS:,} frames (split longer recordings).")
        if count % 4096 == 0 and time.monotonic() > deadline:
            raise InputError(f"{path}: reading its index took longer than {PROBE_TIMEOUT_S} s; expected a "
                             "readable video file.")
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 6:
            continue
        try:
            flags = 1  # framecrc prints F= only when the flags are not "key frame"
            for extra in fields[6:]:
                if extra.startswith("F=0x"):
                    flags = int(extra[4:], 16)
            rows.setdefault(int(fields[0]), []).append((int(fields[1]), int(fields[2]), int(fields[3]), flags))
        except ValueError:
            continue
    header = {}
    for line in header_lines:
        match = re.match(r"#(\w+) (\d+): (.*)$", line)
        if match:
            header[(match.group(1), int(match.group(2)))] = match.group(3).strip()
    return header, {stream: np.asarray(values, dtype=np.int64).reshape(-1, 4) for stream, values in rows.items()}


def _time_base(header, stream: int, path) -> Fraction:
    try:
        value = Fraction(header[("tb", stream)])
    except (KeyError, ValueError, ZeroDivisionError):
        raise InputError(f"{path}: ffmpeg reports no time base for its video; expected a readable video file.") \
            from None
    if value <= 0:
        raise InputError(f"{path}: its video time base {value} is invalid; expected a readable video file.")
    return value


def _video_frames(packets: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(times, durations, has_pts) of the frames a decoder shows, in presentation order.

    With B-frames a packet's duration is the gap to the next *decode* time, not how long its frame is
    shown; the last frame's duration is then unknown (0) and the timeline takes the typical spacing."""
    packets = packets[(packets[:, 3] & _DISCARD) == 0]
    has_pts = bool(packets.shape[0]) and not (packets[:, 1] == NOPTS).any()
    times = packets[:, 1] if has_pts else packets[:, 0]
    order = np.argsort(times, kind="stable")
    durations = np.maximum(packets[order, 2], 0)
    if has_pts and (np.diff(packets[:, 1]) < 0).any():
        durations[-1] = 0
    return times[order], durations, has_pts


def _audio_stream(header, packets, blocks, stream: int) -> AudioStream | None:
    if header.get(("media_type", stream)) != "audio" or stream not in packets or not len(packets[stream]):
        return None
    try:
        base = float(Fraction(header[("tb", stream)]))
        rate = int(header[("sample_rate", stream)])
    except (KeyError, ValueError, ZeroDivisionError):
        return None
    rows = packets[stream]
    rows = rows[rows[:, 1] != NOPTS]
    if not len(rows) or rate <= 0:
        return None
    start = float(rows[:, 1].min()) * base
    end = float((rows[:, 1] + np.maximum(rows[:, 2], 0)).max()) * base
    return AudioStream(codec=header.get(("codec_id", stream), "unknown"), sample_rate=rate,
                       channels=_channels(blocks, header.get(("channel_layout_name", stream))),
                       start=max(0.0, start), end=max(0.0, end))


def probe_video_file(path, audio: bool = True) -> VideoProbe:
    """Probe a video file (see the module docstring); InputError names the file and the fault."""
    path = Path(path)
    check_regular_file(path)
    check_video_name(path)
    maps = ["-map", "0:V:0"] + (["-map", "0:a:0?"] if audio else [])
    # max_pixels: ffmpeg decodes a frame or two to learn a stream's format; an oversized one is not decoded
    args = ["-loglevel", "repeat+info", "-max_pixels", str(MAX_SOURCE_PIXELS), *input_args(path), *maps, "-c", "copy",
            "-f", "framecrc", "-"]
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    with FfmpegProcess(args, path) as ff:
        header, packets = _read_framecrc(ff, path, deadline)
        code = ff.wait(max(1.0, deadline - time.monotonic()))
        stderr = ff.stderr_text()
    inputs = _section(stderr, "Input #0")
    if not inputs:
        raise InputError(f"{path}: cannot be read as a video ({ffmpeg_problem(stderr)}); expected a readable "
                         "mp4/mov/webm/mkv/avi/gif file.")
    video_stream = _mapped_stream(stderr, 0)
    if video_stream is None or not any("Video:" in line for line in inputs):
        raise InputError(f"{path}: has no readable video stream (ffmpeg finds {_stream_kinds(inputs) or 'no streams'}"
                         "); expected a file with a video track (or is the file damaged or truncated?).")
    times, durations, has_pts = _video_frames(packets.get(0, np.zeros((0, 4), np.int64)))
    if not times.shape[0]:
        raise InputError(f"{path}: the video has 0 frames ({ffmpeg_problem(stderr)}); expected at least one "
                         "decodable frame.")
    try:
        width, height = (int(v) for v in header.get(("dimensions", 0), "0x0").split("x"))
    except ValueError:
        width = height = 0
    oversized = re.search(r"Picture size (\d+)x(\d+) exceeds", stderr)
    if oversized:
        check_source_pixels(path, int(oversized.group(1)), int(oversized.group(2)))
    if width < 1 or height < 1:
        raise InputError(f"{path}: its video reports no frame size; expected a readable video file.")
    block = _stream_block(inputs, video_stream)
    rotation = _rotation(block)
    if rotation in (90, 270):
        width, height = height, width
    audio_block = _stream_block(inputs, _mapped_stream(stderr, 1) or "-")
    damage = None
    if code != 0 or re.search(r"partial file|corrupt input packet|Packet corrupt|error reading", stderr,
                              re.IGNORECASE):
        damage = ffmpeg_problem(stderr)
    return VideoProbe(path=str(path), width=width, height=height, rotation=rotation,
                      codec=header.get(("codec_id", 0), "unknown"), stated_fps=_stated_fps(block),
                      declared_duration=_declared_duration(stderr), time_base=_time_base(header, 0, path),
                      pts=times, durations=durations, has_pts=has_pts, damage=damage,
                      audio=_audio_stream(header, packets, audio_block, 1) if audio else None)


def _stream_kinds(lines: list[str]) -> str:
    kinds = [kind.lower() for line in lines for kind in re.findall(r"Stream #\S+.*?: (\w+):", line)]
    return ", ".join(sorted(set(kinds)))
