"""Writing videos: frames streamed into the ffmpeg binary that imageio-ffmpeg ships, encoded as H.264.

Frames come as an array ([F, H, W, 3] uint8, or float 0..1, numpy or torch) or as any sized iterable
of uint8 frames (restore.RestoredFrames restores one frame at a time), and go to ffmpeg's stdin one
frame at a time, so writing holds one frame beyond what the caller holds. The output goes to ffmpeg
as a ``file:`` URL of its absolute path (a name such as ``concat:x.mp4`` is that literal file), under
a temporary name that is renamed when complete (atomic_files). ffmpeg's stderr is kept, so a full
disk or a read-only folder is told as such rather than as an empty file.
"""

from __future__ import annotations

import errno
import logging
import math
import numbers
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic_files import atomic_path, check_file_name
from ..errors import InputError, WriteError
from .containers import file_url
from .ffmpeg_process import FfmpegProcess, ffmpeg_problem

logger = logging.getLogger(__name__)

WRITABLE_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".m4v": "ipod"}  # what ffmpeg picks for each suffix
ENCODE_TIMEOUT_S = 600  # ffmpeg finishing after its last frame (x264 flushing its lookahead)
_CONVERT = 8  # float frames converted to uint8 this many at a time

# Written files are tagged BT.709 (what players assume for HD video) and converted with that
# matrix, so colours do not shift between the writer, ffmpeg's own reader and players.
_BT709_FILTER = ("scale=out_color_matrix=bt709:out_range=tv,"
                 "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709")


def _check_float_range(frames) -> None:
    low, high = float(frames.min()), float(frames.max())
    if low < -0.05 or high > 1.05 or not np.isfinite([low, high]).all():
        raise InputError(f"frames: float values span {low:.3g}..{high:.3g}; expected 0..1 "
                         "(map a [-1, 1] video with (x + 1) / 2 first).")


class _ArrayFrames:
    """An array of frames as the writer's iterable of uint8 frames, converted a few at a time."""

    def __init__(self, frames):
        if hasattr(frames, "detach"):  # a torch tensor
            frames = frames.detach().cpu()
            frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise InputError(f"frames: shape {tuple(frames.shape)} is invalid; expected [frames, height, width, 3] "
                             "with at least one frame.")
        if frames.dtype != np.uint8:
            if not np.issubdtype(frames.dtype, np.floating):
                raise InputError(f"frames: dtype {frames.dtype} is not supported; expected uint8 0..255 or "
                                 "float 0..1.")
            _check_float_range(frames)
        self.frames = frames
        self.height, self.width = (int(d) for d in frames.shape[1:3])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __iter__(self):
        for start in range(0, len(self), _CONVERT):
            chunk = self.frames[start:start + _CONVERT]
            if chunk.dtype != np.uint8:
                chunk = np.round(np.clip(chunk, 0.0, 1.0) * 255.0).astype(np.uint8)
            yield from chunk


def _as_frames(frames):
    if hasattr(frames, "height") and hasattr(frames, "width") and hasattr(frames, "__iter__") \
            and hasattr(frames, "__len__") and not hasattr(frames, "shape"):
        return frames  # already a sized iterable of uint8 frames (restore.RestoredFrames)
    return _ArrayFrames(frames)


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: one edge-replicated row/column instead of a rescale (which would blur
    every pixel; the extra row/column is a copy of the border)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def write_video(path: str | os.PathLike, frames, fps: float | Fraction, crf: int = 17, audio=None) -> Path:
    """Encode frames (see the module docstring) as H.264 yuv420p at ``fps``.

    ``audio`` (audio.SourceAudio or audio.AudioClip) is added, trimmed to the video's length.
    Odd widths/heights get one edge-replicated column/row. The file is written under a temporary
    name in the same folder and renamed when complete, so an interrupted write never leaves a
    partial file under ``path``. Parent folders are created.
    """
    path = Path(path)
    check_file_name(path, "out")
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise InputError(f"{path}: cannot write H.264 into a {path.suffix or 'suffix-less'} file; "
                         f"expected one of {', '.join(WRITABLE_SUFFIXES)}.")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps: {fps!r} is invalid; expected a positive frame rate.")
    if int(crf) != crf or not 0 <= crf <= 51:
        raise InputError(f"crf: {crf!r} is invalid; expected an integer 0..51 (lower is better quality).")
    frames = _as_frames(frames)
    if len(frames) < 1:
        raise InputError("frames: no frames to write; expected at least one.")
    if frames.height % 2 or frames.width % 2:
        logger.info("Padding %dx%d frames to even sizes (edge copy) for yuv420p.", frames.width, frames.height)

    output_params = ["-crf", str(int(crf)), "-vf", _BT709_FILTER]
    if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        output_params += ["-movflags", "+faststart"]
    with atomic_path(path, keep_suffix=True) as temp:
        if audio is None:
            _encode(temp, frames, fps, output_params, path)
            return path
        from .audio import mux_audio  # noqa: PLC0415

        video_only = temp.with_name(f"{temp.stem}.video{temp.suffix}")  # a .partial name: cleaned up if killed
        try:
            _encode(video_only, frames, fps, output_params, path)
            mux_audio(video_only, temp, audio, len(frames) / float(fps))
        finally:
            video_only.unlink(missing_ok=True)
    return path


def _disk_problem(folder: Path, stderr: str) -> str | None:
    """'the disk is full' / 'read-only' when ffmpeg's failure comes from the output folder's file system."""
    problem = ffmpeg_problem(stderr)
    if "disk is full" in problem or "read-only" in problem:
        return problem
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return "the disk is full (less than 1 MiB free)"
    except OSError:
        pass
    return None


def _encode(temp: Path, frames, fps, output_params: list[str], path: Path) -> None:
    rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator()
    width, height = frames.width + frames.width % 2, frames.height + frames.height % 2
    args = ["-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
            "-pix_fmt", "rgb24", "-r", str(rate), "-protocol_whitelist", "pipe", "-i", "pipe:0", "-an",
            "-vcodec", "libx264", "-pix_fmt", "yuv420p", *output_params, "-f", _MUXERS[path.suffix.lower()],
            file_url(temp)]
    with FfmpegProcess(args, path, stdin=True) as ff:
        try:
            for frame in frames:
                ff.stdin.write(memoryview(_even(np.asarray(frame, dtype=np.uint8))).cast("B"))
            ff.stdin.close()
            code = ff.wait(ENCODE_TIMEOUT_S)
        except (BrokenPipeError, OSError) as exc:  # ffmpeg stopped reading: its stderr says why
            if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
                raise
            ff.kill()
            ff.wait(10)  # its stderr read to the end
            code = -1
        stderr = ff.stderr_text()
    empty = code == 0 and temp.stat().st_size == 0
    if code != 0 or empty:
        disk = _disk_problem(temp.parent, stderr)
        if disk:  # the file system, not the frames: say so, and what to change
            raise WriteError(f"{path}: cannot be written ({disk}); free some space or choose another --out folder.",
                             errno.ENOSPC if "full" in disk else errno.EROFS)
        what = "ffmpeg wrote nothing" if empty else "writing the video failed"
        raise InputError(f"{path}: {what} ({ffmpeg_problem(stderr)}); expected an encoded video.")
