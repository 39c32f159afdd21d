"""Pixel conversions the fitting uses: frames as tensors, uint8 or 0..1 to [-1, 1], antialiased resizing,
mapping a source region onto a (letterboxed) target canvas, and allocations that report running out
of memory with the size asked for.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

Box = tuple[int, int, int, int]  # x, y, width, height


def as_tensor(frames, name: str) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames)
        # read-only arrays (e.g. np.asarray of a PIL image) are copied: torch cannot wrap them safely
        frames = torch.from_numpy(frames if frames.flags.writeable else frames.copy())
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"{name}: got {type(frames).__name__}; expected a numpy array or torch tensor.")
    return frames


def to_signed_unit(frames: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 0..255 or float 0..1 (channels last) -> float32 in [-1, 1]."""
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1.0
    if not frames.is_floating_point():
        raise InputError(f"{name}: dtype {frames.dtype} is not supported; expected uint8 0..255 or float 0..1.")
    frames = frames.float()
    low, high = float(frames.min()), float(frames.max())
    if low < -0.05 or high > 1.05:
        raise InputError(f"{name}: float values span {low:.3g}..{high:.3g}; expected 0..1.")
    return frames.clamp(0.0, 1.0) * 2.0 - 1.0


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of [N, C, H, W], antialiased when any side shrinks, clamped to [-1, 1]."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    shrinking = height < images.shape[-2] or width < images.shape[-1]
    resized = F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    return resized.clamp_(-1.0, 1.0)


def map_region(images: torch.Tensor, crop_box: Box, content_box: Box, width: int, height: int) -> torch.Tensor:
    """Cut crop_box from [N, 3, H, W] images, resize it to content_box and place it on a black canvas."""
    x, y, w, h = crop_box
    region = resize(images[:, :, y:y + h, x:x + w], content_box[3], content_box[2])
    if content_box == (0, 0, width, height):
        return region
    canvas = torch.full((images.shape[0], images.shape[1], height, width), -1.0, dtype=region.dtype,
                        device=region.device)
    cx, cy, cw, ch = content_box
    canvas[:, :, cy:cy + ch, cx:cx + cw] = region
    return canvas


def check_frames(frames: torch.Tensor, name: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise InputError(f"{name}: shape {tuple(frames.shape)} is invalid; expected [frames, height, width, 3] "
                         "with at least one frame.")


def allocate(shape, dtype, what: str) -> torch.Tensor:
    """torch.empty that reports running out of memory as such, with the size that was asked for."""
    try:
        return torch.empty(shape, dtype=dtype)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
            raise
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        raise InputError(f"out of memory: {what} needs {size / 2**30:.2f} GiB ({' x '.join(map(str, shape))} "
                         f"{str(dtype).replace('torch.', '')}); use fewer frames or a smaller size.") from None
