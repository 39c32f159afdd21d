"""Reading whole videos and still images as uint8 RGB numpy arrays.

Video files are probed and decoded by the ffmpeg binary that imageio-ffmpeg ships (probe,
decode: every frame once, in presentation order, rotation applied, the rate measured from the
timestamps); still images and folders of numbered frames go through PIL, their size checked from
the header before a pixel is decoded. Reading only the frames a fit uses is clip_reader's job; this
module serves callers that want every frame (training, tests). Every failure a user can cause
(missing path, corrupt file, empty video, mixed frame sizes, oversized frames) is raised as
InputError naming the path and what was expected. Writing is write's (write_video is re-exported here).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .containers import VIDEO_SUFFIXES, check_not_a_loop  # noqa: F401  (VIDEO_SUFFIXES: re-exported)
from .decode import decode_frames
from .host_memory import check_memory
from .probe import MAX_SOURCE_PIXELS, check_source_pixels, probe_video_file
from .timing import timeline_from_probe
from .write import WRITABLE_SUFFIXES, write_video  # noqa: F401  (re-exported: the one writer lives in write)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


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

_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of a still image as displayed (EXIF orientation applied), from its header only."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file; expected a {'/'.join(IMAGE_SUFFIXES)} file.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Image.DecompressionBombError as exc:  # PIL refuses sizes above its own limit before we can look
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = int(pixels.group(1)) if pixels else 0
        raise InputError(f"{path}: frames of {count / 1e6:.0f} Mpx are larger than the {MAX_SOURCE_PIXELS / 1e6:.0f} "
                         "Mpx (8192x8192) this reader decodes; scale the image down first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}); expected a "
                         f"{'/'.join(IMAGE_SUFFIXES)} file.") from None
    return (height, width) if orientation in _ROTATING_ORIENTATIONS else (width, height)


def read_image(path: str | os.PathLike, box=None, reduce_to=None, max_side: int | None = None) -> np.ndarray:
    """One still image as uint8 RGB [H, W, 3].

    EXIF orientation is applied; transparency is composited on black; greyscale becomes RGB;
    16-bit images are scaled to 8 bits; animated images give their first frame. Images over
    MAX_SOURCE_PIXELS are refused from their header, before decoding. ``box`` (x, y, w, h) cuts a
    region; ``reduce_to`` (w, h) averages it down by a whole factor while it stays at least twice that
    size, so a huge photo costs little memory downstream (the final resize is the caller's); ``max_side``
    averages it down by the smallest whole factor that brings its longer side to at most that.
    """
    path = Path(path)
    check_source_pixels(path, *image_size(path))
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if box is not None:
                x, y, w, h = box
                image = image.crop((x, y, x + w, y + h))
            if reduce_to is not None:
                factor = min(image.size[0] // (2 * reduce_to[0]), image.size[1] // (2 * reduce_to[1]))
                if factor >= 2:
                    image = image.reduce(int(factor))
            if max_side is not None and max(image.size) > max_side:
                image = image.reduce(math.ceil(max(image.size) / max_side))
            return _to_rgb_uint8(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}); expected a "
                         f"{'/'.join(IMAGE_SUFFIXES)} file.") from None
    except MemoryError:
        raise InputError(f"out of memory: {path} needs more memory to decode than is free.") from None


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


def check_frame_size(file: Path, first: Path, size: tuple[int, int]) -> None:
    """Every frame of a frame folder must have the size (width, height) of its first frame ``first``."""
    width, height = image_size(file)
    if (width, height) != tuple(size):
        raise InputError(f"{file}: frame is {width}x{height} but {first.name} is {size[0]}x{size[1]}; every frame "
                         "in a frame folder must have the same size.")


def _read_frame_folder(folder: Path, max_frames: int | None) -> np.ndarray:
    files = list_frame_files(folder)
    if max_frames is not None:
        files = files[:max_frames]
    frames = []
    first = image_size(files[0])
    for file in files:
        check_frame_size(file, files[0], first)
        frames.append(read_image(file))
    return np.stack(frames)


# ---------------------------------------------------------------- video files

def _memory_needed(path, frames: int, width: int, height: int) -> None:
    check_memory(frames * width * height * 3, f"{path}: decoding {frames} frames of {width}x{height}")


def _read_video_file(path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    probe = probe_video_file(path, audio=False)
    timeline = timeline_from_probe(probe)
    for note in timeline.notes:
        logger.warning(note)
    count = probe.num_frames if max_frames is None else min(int(max_frames), probe.num_frames)
    _memory_needed(path, count, probe.width, probe.height)
    wanted = list(range(count))
    found, _ = decode_frames(probe, timeline, wanted, (0, 0, probe.width, probe.height),
                             (probe.width, probe.height))
    kept = [found[i] for i in wanted if i in found]
    if len(kept) < count:
        logger.warning("%s: %d of its %d frames could not be decoded; they are left out.", path,
                       count - len(kept), count)
    return np.stack(kept), timeline.average_fps


def read_video(path: str | os.PathLike, max_frames: int | None = None, frame_folder_fps: float = 8.0) -> Video:
    """Decode a video file, a folder of frames, or a single image (as a 1-frame video): every frame, or
    the first ``max_frames``. The rate of a video file is measured from its frames' timestamps;
    ``frame_folder_fps`` is the rate of frame folders and still images."""
    path = Path(path)
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise InputError(f"max_frames: {max_frames!r} is invalid; expected a positive integer or None.")
    if not frame_folder_fps or not math.isfinite(frame_folder_fps) or frame_folder_fps <= 0:
        raise InputError(f"frame_folder_fps: {frame_folder_fps!r} is invalid; expected a positive frame rate.")
    if not path.exists():
        check_not_a_loop(path)
        raise InputError(f"{path}: no such video file or frame folder.")
    if path.is_dir():
        return Video(_read_frame_folder(path, max_frames), float(frame_folder_fps), str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Video(read_image(path)[None], float(frame_folder_fps), str(path))
    frames, fps = _read_video_file(path, max_frames)
    return Video(frames, fps, str(path))
