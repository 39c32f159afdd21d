"""Reading and writing videos and still images as uint8 RGB numpy arrays.

Videos go through imageio-ffmpeg (its bundled ffmpeg decodes mp4/mov/webm/mkv/avi/gif and
applies rotation metadata itself); still images and folders of numbered frames go through PIL.
Every failure a user can cause (missing path, corrupt file, empty video, mixed frame sizes)
is raised as InputError naming the path and what was expected.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic_files import atomic_path
from .errors import InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v")
WRITABLE_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")

# Written files are tagged BT.709 (what players assume for HD video) and converted with that
# matrix, so colours do not shift between the writer, ffmpeg's own reader and players.
_BT709_FILTER = ("scale=out_color_matrix=bt709:out_range=tv,"
                 "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709")


@dataclass
class Video:
    """Decoded frames (uint8 [F, H, W, 3]), their frame rate, and where they came from."""

    frames: np.ndarray
    fps: float
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


# ---------------------------------------------------------------- still images and frame folders

def read_image(path: str | os.PathLike) -> np.ndarray:
    """One still image as uint8 RGB [H, W, 3].

    EXIF orientation is applied; transparency is composited on black; greyscale becomes RGB;
    16-bit images are scaled to 8 bits; animated images give their first frame.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file; expected a {'/'.join(IMAGE_SUFFIXES)} file.")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_uint8(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}); expected a "
                         f"{'/'.join(IMAGE_SUFFIXES)} file.") from None


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        scale = 257.0 if grey.max(initial=0) > 255 or image.mode.startswith("I;16") else 1.0
        grey = np.clip(np.round(grey / scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":  # float images are taken as 0..1
        grey = np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        # Composite on black: colour * alpha, rounded (alpha 255 keeps the colour exactly).
        rgb = (rgba[:, :, :3] * rgba[:, :, 3:4] + 127) // 255
        return rgb.astype(np.uint8)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _natural_key(name: str):
    """Sort key that orders embedded numbers by value: frame2 before frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a frame folder in natural order (hidden files skipped)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{folder}: folder holds no frames; expected {'/'.join(IMAGE_SUFFIXES)} files "
                         "named in frame order (e.g. 0001.png, 0002.png).")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_frame_folder(folder: Path, max_frames: int | None) -> np.ndarray:
    files = list_frame_files(folder)
    if max_frames is not None:
        files = files[:max_frames]
    frames = []
    for file in files:
        frame = read_image(file)
        if frames and frame.shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            h, w = frame.shape[:2]
            raise InputError(f"{file}: frame is {w}x{h} but {files[0].name} is {w0}x{h0}; "
                             "every frame in a frame folder must have the same size.")
        frames.append(frame)
    return np.stack(frames)


# ---------------------------------------------------------------- video files

def _open_ffmpeg_reader(path: Path):
    """Start decoding; returns (generator positioned after the metadata, metadata)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except StopIteration:
        raise InputError(f"{path}: ffmpeg found no video stream; expected a video file.") from None
    except Exception as exc:  # ffmpeg's stderr explains; keep its last line
        reader.close()
        raise InputError(f"{path}: cannot be read as a video ({_ffmpeg_problem(exc)}); expected a readable "
                         f"{'/'.join(VIDEO_SUFFIXES)} file.") from None
    return reader, meta


# ffmpeg's stderr is long; these phrases in it say what is wrong in words a user can act on.
_FFMPEG_PROBLEMS = (
    ("does not contain any stream", "it has no video stream, or one with 0 frames"),
    ("partial file", "the file is truncated"),
    ("moov atom not found", "the file is truncated or was never finished (no index)"),
    ("Invalid data found", "ffmpeg finds no video data it can decode"),
    ("No such file", "the file cannot be opened"),
)


def _ffmpeg_problem(exc: Exception) -> str:
    text = str(exc)
    for phrase, problem in _FFMPEG_PROBLEMS:
        if phrase in text:
            return problem
    lines = [line.strip() for line in text.splitlines() if line.strip() and "===" not in line]
    return lines[-1] if lines else type(exc).__name__


def _read_video_file(path: Path, max_frames: int | None) -> tuple[np.ndarray, float, dict]:
    reader, meta = _open_ffmpeg_reader(path)
    width, height = meta["size"]  # after ffmpeg's auto-rotation
    frames = []
    try:
        for index, raw in enumerate(reader):
            if max_frames is not None and index >= max_frames:
                break
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
    except Exception as exc:
        raise InputError(f"{path}: decoding failed after {len(frames)} frames ({_ffmpeg_problem(exc)}); "
                         "expected a complete, uncorrupted video.") from None
    finally:
        reader.close()
    if not frames:
        raise InputError(f"{path}: the video has 0 frames; expected at least one decodable frame.")
    return np.stack(frames), float(meta.get("fps") or 0.0), meta


def read_video(path: str | os.PathLike, max_frames: int | None = None, frame_folder_fps: float = 8.0) -> Video:
    """Decode a video file, a folder of frames, or a single image (as a 1-frame video).

    ``max_frames`` stops decoding early. ``frame_folder_fps`` is the frame rate given to frame
    folders and still images, and to video files that state none.
    """
    path = Path(path)
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise InputError(f"max_frames: {max_frames!r} is invalid; expected a positive integer or None.")
    if not frame_folder_fps or frame_folder_fps <= 0:
        raise InputError(f"frame_folder_fps: {frame_folder_fps!r} is invalid; expected a positive frame rate.")
    if not path.exists():
        raise InputError(f"{path}: no such video file or frame folder.")
    if path.is_dir():
        return Video(_read_frame_folder(path, max_frames), float(frame_folder_fps), str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Video(read_image(path)[None], float(frame_folder_fps), str(path))
    frames, fps, meta = _read_video_file(path, max_frames)
    if fps <= 0:
        duration = float(meta.get("duration") or 0.0)
        fps = frames.shape[0] / duration if duration > 0 and max_frames is None else float(frame_folder_fps)
        logger.warning("%s states no frame rate; using %.3g fps.", path, fps)
    return Video(frames, fps, str(path))


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames without keeping them (a video file is decoded once, frames discarded)."""
    return probe_video(path)[0]


def probe_video(path: str | os.PathLike, frame_folder_fps: float = 8.0) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) of a video file, frame folder or image, without keeping pixels."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such video file or frame folder.")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = list_frame_files(path) if path.is_dir() else [path]
        try:
            with Image.open(files[0]) as image:
                image = ImageOps.exif_transpose(image)
                width, height = image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{files[0]}: cannot be read as an image ({exc}).") from None
        return len(files), float(frame_folder_fps), int(width), int(height)
    reader, meta = _open_ffmpeg_reader(path)
    reader.close()
    try:
        frames, _seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot count frames ({_ffmpeg_problem(exc)}); expected a readable video.") from None
    if not frames:
        raise InputError(f"{path}: the video has 0 frames; expected at least one decodable frame.")
    width, height = meta["size"]
    return int(frames), float(meta.get("fps") or 0.0), int(width), int(height)


# ---------------------------------------------------------------- writing

def _frames_as_uint8(frames) -> np.ndarray:
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"frames: shape {tuple(frames.shape)} is invalid; expected [frames, height, width, 3] "
                         "with at least one frame.")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise InputError(f"frames: dtype {frames.dtype} is not supported; expected uint8 0..255 or float 0..1.")
    low, high = float(frames.min()), float(frames.max())
    if low < -0.05 or high > 1.05 or not np.isfinite([low, high]).all():
        raise InputError(f"frames: float values span {low:.3g}..{high:.3g}; expected 0..1 "
                         "(map a [-1, 1] video with (x + 1) / 2 first).")
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: add one edge-replicated row/column instead of letting ffmpeg rescale
    (a rescale would blur every pixel; the extra row/column is a copy of the border)."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    logger.info("Padding %dx%d frames to %dx%d (edge copy) for yuv420p.", width, height, width + pad_w, height + pad_h)
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames, fps: float | Fraction, crf: int = 17) -> Path:
    """Encode frames (uint8 [F, H, W, 3] or float 0..1) as H.264 yuv420p at ``fps``.

    Odd widths/heights get one edge-replicated column/row (see _pad_to_even). The file is written
    under a temporary name in the same folder and renamed when complete, so an interrupted write
    never leaves a partial file under ``path``. Parent folders are created.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise InputError(f"{path}: cannot write H.264 into a {path.suffix or 'suffix-less'} file; "
                         f"expected one of {', '.join(WRITABLE_SUFFIXES)}.")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps: {fps!r} is invalid; expected a positive frame rate.")
    if int(crf) != crf or not 0 <= crf <= 51:
        raise InputError(f"crf: {crf!r} is invalid; expected an integer 0..51 (lower is better quality).")
    frames = _pad_to_even(_frames_as_uint8(frames))
    height, width = frames.shape[1:3]

    output_params = ["-crf", str(int(crf)), "-vf", _BT709_FILTER]
    if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        output_params += ["-movflags", "+faststart"]
    with atomic_path(path, keep_suffix=True) as temp:
        writer = imageio_ffmpeg.write_frames(
            str(temp), (int(width), int(height)), fps=fps if isinstance(fps, Fraction) else float(fps),
            codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
            ffmpeg_log_level="error", output_params=output_params)
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        if temp.stat().st_size == 0:
            raise InputError(f"{path}: ffmpeg wrote nothing; expected an encoded video.")
    return path
