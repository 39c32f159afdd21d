"""Turning one training clip into model input: the frame window, and the resize / centre crop.

As the authors (spec, "Reference training settings"): ``num_frames`` frames at ``stride`` from a
random start, each frame resized so its long side is ``resize_long`` (1280 real, 1505 synthetic),
then centre-cropped to height x width; the reference image is resized (stretched) to height x width.
Resizing is the core's ``resize_image`` (bicubic, antialiased when shrinking); the crop offsets
round like torchvision's CenterCrop. Pixels come out as float32 [3, F, H, W] in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.video_fit import resize_image
from wan_egoexo.video_io import list_frame_files, read_image, read_video


def frames_needed(num_frames: int, stride: int) -> int:
    """Source frames a window of ``num_frames`` at ``stride`` spans."""
    return (num_frames - 1) * stride + 1


def window_indices(total_frames: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` indices at ``stride`` from a start drawn uniformly from every start that fits."""
    needed = frames_needed(num_frames, stride)
    if total_frames < needed:
        raise InputError(f"clip has {total_frames} frames; {num_frames} frames at stride {stride} need {needed}.")
    start = int(rng.integers(0, total_frames - needed + 1))
    return start + np.arange(num_frames) * stride


def resized_size(width: int, height: int, resize_long: int) -> tuple[int, int]:
    """(width, height) after scaling the long side to ``resize_long`` (Python rounding, as the authors)."""
    scale = resize_long / max(width, height)
    return int(round(width * scale)), int(round(height * scale))


def centre_crop_offset(resized_width: int, resized_height: int, width: int, height: int) -> tuple[int, int]:
    """(left, top) of a centred width x height crop, rounded as torchvision's CenterCrop."""
    return int(round((resized_width - width) / 2.0)), int(round((resized_height - height) / 2.0))


def crop_fits(source_width: int, source_height: int, resize_long: int, width: int, height: int) -> bool:
    resized_w, resized_h = resized_size(source_width, source_height, resize_long)
    return resized_w >= width and resized_h >= height


def read_frames(path: Path, indices) -> np.ndarray:
    """uint8 [len(indices), H, W, 3]: only the wanted files of a frame folder; a video file is decoded
    up to the last wanted frame."""
    indices = [int(i) for i in indices]
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        return np.stack([read_image(files[i]) for i in indices])
    frames = read_video(path, max_frames=max(indices) + 1).frames
    if frames.shape[0] <= max(indices):
        raise InputError(f"{path}: decoded {frames.shape[0]} frames; frame {max(indices)} was needed.")
    return frames[indices]


def fit_frames(frames: np.ndarray, resize_long: int, height: int, width: int) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] -> float32 [3, F, height, width] in [-1, 1]: long side to
    ``resize_long``, then the centre crop."""
    source_h, source_w = int(frames.shape[1]), int(frames.shape[2])
    resized_w, resized_h = resized_size(source_w, source_h, resize_long)
    if resized_w < width or resized_h < height:
        raise InputError(f"frames of {source_w}x{source_h} resized to {resized_w}x{resized_h} (long side "
                         f"{resize_long}) are smaller than the {width}x{height} crop.")
    left, top = centre_crop_offset(resized_w, resized_h, width, height)
    out = torch.empty((3, frames.shape[0], height, width), dtype=torch.float32)
    for i, frame in enumerate(frames):
        resized = resize_image(frame, resized_w, resized_h, mode="stretch")[:, 0]
        out[:, i] = resized[:, top:top + height, left:left + width]
    return out


def load_reference(path: Path, height: int, width: int) -> torch.Tensor:
    """The reference image stretched to height x width: float32 [3, 1, height, width] in [-1, 1]."""
    return resize_image(read_image(path), width, height, mode="stretch")
