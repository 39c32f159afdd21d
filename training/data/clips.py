"""Turning one training clip into model input: the frame windows, and the authors' resize / centre crop.

The pixels follow the authors' training transforms step for step (spec, "Reference training
settings"; their dataset applies torchvision transforms to PIL images):

- video frames: scale so the long side is ``resize_long`` (1280 real, 1505 synthetic), the new size
  rounded with Python's ``round`` per side; PIL bilinear resampling (PIL's filter widens with the
  scale, so downscaling is antialiased); centre crop to height x width with torchvision's
  CenterCrop offsets ``round((size - crop) / 2)``;
- reference image: PIL bilinear stretch to width x height (torchvision's ``Resize([h, w])`` on a PIL
  image);
- to float: ``x / 255``, then ``(x - 0.5) / 0.5`` (ToTensor then Normalize), float32 [-1, 1].

PIL is used directly rather than the core's ``video_fit.resize_image`` (bicubic, for inference):
training must see the pixels the released LoRAs were trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wan_egoexo.errors import InputError
from wan_egoexo.video.read_write import list_frame_files, read_image, read_video


def frames_needed(num_frames: int, stride: int) -> int:
    """Source frames a window of ``num_frames`` at ``stride`` spans."""
    return (num_frames - 1) * stride + 1


def window_starts(total_frames: int, num_frames: int, stride: int) -> np.ndarray:
    """Every start frame of a window that fits in the clip (0 .. total - span)."""
    needed = frames_needed(num_frames, stride)
    if total_frames < needed:
        raise InputError(f"clip has {total_frames} frames; {num_frames} frames at stride {stride} need {needed}.")
    return np.arange(total_frames - needed + 1)


def spread_starts(total_frames: int, num_frames: int, stride: int, count: int) -> list[int]:
    """At most ``count`` window starts spread evenly from the first to the last start that fits (every
    start when the clip has no more than ``count``): the windows a latent cache stores."""
    starts = window_starts(total_frames, num_frames, stride)
    if len(starts) <= count:
        return [int(s) for s in starts]
    return sorted({int(round(x)) for x in np.linspace(0, starts[-1], count)})


def window_indices(start: int, num_frames: int, stride: int) -> np.ndarray:
    """The frame indices of the window starting at ``start``."""
    return int(start) + np.arange(num_frames) * stride


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


def resize_bilinear(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [height, width, 3] by PIL's bilinear filter (the same size is a copy)."""
    return np.array(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def to_signed_unit(frame: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1], in the authors' order of operations."""
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).to(torch.float32).div(255)
    return pixels.sub_(0.5).div_(0.5)


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
        resized = resize_bilinear(frame, resized_w, resized_h)
        out[:, i] = to_signed_unit(resized[top:top + height, left:left + width])
    return out


def load_reference(path: Path, height: int, width: int) -> torch.Tensor:
    """The reference image stretched to height x width: float32 [3, 1, height, width] in [-1, 1]."""
    return to_signed_unit(resize_bilinear(read_image(path), width, height)).unsqueeze(1)
