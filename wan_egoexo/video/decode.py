"""Decoding only the frames a fit uses, resized as they are read, by streaming from ffmpeg.

ffmpeg decodes the clip (applying its rotation), crops the fit's source region and scales it to
the fit's content size with its own filters, and pipes the small frames here one at a time; its
``showinfo`` filter logs each frame's timestamp, by which the wanted frames are recognised (frames
of files without timestamps are recognised by position). Only the wanted frames are kept and
ffmpeg is stopped after the last one, so memory grows with the frames used, not with the file's
length or resolution, and a 20-second clip costs what a 2-second one does when 9 frames are used.

Why the ffmpeg binary and not PyAV: the binary ships with imageio-ffmpeg (already a dependency),
a hostile file that trips a decoder costs a child process rather than this one, and ffmpeg's own
filters already resize while decoding; PyAV would add a dependency for no gain in speed or memory.
"""

from __future__ import annotations

import queue
import re

import numpy as np

from ..errors import InputError
from .containers import input_args
from .ffmpeg_process import FfmpegProcess, ffmpeg_problem
from .probe import MAX_SOURCE_PIXELS, check_source_pixels

FRAME_TIMEOUT_S = 120  # one frame of a sane file decodes in well under a second
_SHOWINFO = re.compile(r"Parsed_showinfo.*\] n:\s*(\d+)\s+pts:\s*(\S+)")


def _filters(crop_box, size) -> str:
    x, y, w, h = crop_box
    width, height = size
    chain = [f"crop={w}:{h}:{x}:{y}:exact=1"]
    chain.append(f"scale={width}:{height}:flags=bicubic+full_chroma_int")
    chain += ["format=rgb24", "showinfo"]
    return ",".join(chain)


def _read_exactly(stream, buffer: memoryview) -> bool:
    """Fill ``buffer`` from ``stream``; False at a clean end of stream (nothing read)."""
    got = 0
    while got < len(buffer):
        count = stream.readinto(buffer[got:])
        if not count:
            return False  # the end; a cut-off last frame counts as no frame
        got += count
    return True


def decode_frames(probe, timeline, indices, crop_box, size) -> tuple[dict[int, np.ndarray], int]:
    """{source index: uint8 [height, width, 3]} for the wanted ``indices`` of a probed file, the crop box
    (x, y, w, h, in displayed pixels) resized to ``size`` (width, height), and the number of frames
    ffmpeg decoded. Frames that could not be decoded are absent from the dict."""
    check_source_pixels(probe.path, probe.width, probe.height)
    wanted = sorted(set(int(i) for i in indices))
    if timeline.by_pts:
        key_of = {int(probe.pts[i]): i for i in wanted}
    else:
        key_of = {i: i for i in wanted}
    width, height = size
    frame_bytes = width * height * 3
    found: dict[int, np.ndarray] = {}
    entries: queue.Queue = queue.Queue()

    def on_line(line: str) -> None:
        match = _SHOWINFO.search(line)
        if match:
            pts = match.group(2)
            entries.put((int(match.group(1)), int(pts) if pts.lstrip("-").isdigit() else None))

    args = ["-loglevel", "repeat+info", "-max_pixels", str(MAX_SOURCE_PIXELS), *input_args(probe.path),
            "-map", "0:V:0", "-an", "-sn", "-dn", "-vf", _filters(crop_box, size), "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    buffer = bytearray(frame_bytes)
    view = memoryview(buffer)
    decoded = 0
    with FfmpegProcess(args, probe.path, on_line=on_line) as ff:
        last_wanted = max(key_of) if timeline.by_pts else max(wanted)
        while len(found) < len(wanted) and _read_exactly(ff.stdout, view):
            try:
                ordinal, pts = entries.get(timeout=FRAME_TIMEOUT_S)
            except queue.Empty:
                raise InputError(f"{probe.path}: ffmpeg sent a frame without its timestamp; expected a readable "
                                 "video file.") from None
            decoded += 1
            key = pts if timeline.by_pts else ordinal
            index = key_of.get(key)
            if index is not None and index not in found:
                found[index] = np.frombuffer(bytes(buffer), dtype=np.uint8).reshape(height, width, 3)
            if key is not None and key > last_wanted:
                break  # frames come in presentation order: nothing wanted can follow
        if not found:
            code = ff.wait(FRAME_TIMEOUT_S)
            problem = ffmpeg_problem(ff.stderr_text()) if code else "no frame could be decoded"
            raise InputError(f"{probe.path}: decoding failed ({problem}); expected at least one decodable frame.")
    return found, decoded


def fill_missing(found: dict[int, np.ndarray], indices, times) -> tuple[dict[int, np.ndarray], list[int]]:
    """Stand the nearest decoded frame (in time) in for every wanted frame that could not be decoded;
    returns the completed dict and the indices that were missing."""
    have = np.asarray(sorted(found))
    missing = sorted(set(int(i) for i in indices) - set(found))
    for index in missing:
        nearest = have[np.argmin(np.abs(np.asarray(times)[have] - times[index]))]
        found[index] = found[int(nearest)]
    return found, missing
