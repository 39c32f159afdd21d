"""Conversions between ComfyUI's data conventions and this package's, with no ComfyUI import.

ComfyUI passes videos as IMAGE batches (float [frames, H, W, 3] in 0..1), text as CONDITIONING
(a list of [tensor [1, tokens, width], dict]) and latents as LATENT dicts of *raw* VAE latents.
This module converts those to and from the core's tensors, and holds the few other pieces the
nodes need: the Wan2.2 latent-to-RGB preview factors, Diffusers folders in a models tree, the animated preview the UI shows, and running a module
on a device only while it is used.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .in_context.latents import latent_shape
from .video.fit import FitInfo
from .video.host_memory import check_memory
from .video.restore import RESTORE_BYTES, RestoredFrames

# The first element of a ComfyUI label that stands for a Diffusers pipeline folder, not a file.
DIFFUSERS_LABEL = "[diffusers] "
DEFAULT_FPS = 8.0  # the reference output rate

# Wan2.2 latent -> RGB: a linear map of the *normalised* latents (what ComfyUI's samplers preview),
# 48 channels x (R, G, B), and its bias. Facts from ComfyUI 0.3.64, comfy/latent_formats.py, Wan22.
WAN22_LATENT_RGB_FACTORS = (
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491), (-0.0813, -0.0677, 0.0607),
    (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912), (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025),
    (0.0443, -0.0102, 0.0288), (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637), (-0.0268, 0.0024, 0.0260),
    (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287), (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622),
    (-0.0086, -0.0374, -0.0051), (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447), (-0.0304, -0.0574, -0.0196),
    (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014), (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380),
    (0.0239, -0.0305, 0.0325), (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295), (-0.3441, -0.3543, -0.2008),
    (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800), (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927),
    (-0.0145, 0.0041, 0.0015), (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055),
)
WAN22_LATENT_RGB_BIAS = (0.0317, -0.0878, -0.1388)


# ---------------------------------------------------------------- IMAGE batches <-> videos

def video_to_image_batch(video: torch.Tensor) -> torch.Tensor:
    """A video [3, F, H, W] or [1, 3, F, H, W] in [-1, 1] as an IMAGE [F, H, W, 3] float32 0..1 on the CPU."""
    if isinstance(video, torch.Tensor) and video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[0] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise InputError(f"video: shape {shape} is not [3, frames, height, width] (or [1, 3, ...]) in [-1, 1].")
    return ((video.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0).permute(1, 2, 3, 0).contiguous().cpu()


def check_image_batch(images, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{name}: {shape} is not an IMAGE batch; expected [frames, height, width, 3] "
                         "with values 0..1 and at least one frame.")


def image_batch_to_video(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """An IMAGE [F, H, W, 3] in 0..1 as a model-grid video [1, 3, F, H, W] float32 in [-1, 1].

    Raises InputError naming ``name`` unless F = 4k+1 and H, W are multiples of 32 (what
    WorldWander Load Video produces).
    """
    check_image_batch(images, name)
    frames, height, width = (int(d) for d in images.shape[:3])
    try:
        latent_shape(frames, height, width)
    except InputError as exc:
        raise InputError(f"{name}: {frames} frames of {width}x{height} are not on the model grid: {exc} "
                         "Load the clip with WorldWander Load Video, which fits it.") from None
    low, high = float(images.min()), float(images.max())
    if low < -0.05 or high > 1.05:
        raise InputError(f"{name}: values span {low:.3g}..{high:.3g}; expected an IMAGE in 0..1.")
    return (images.detach().float().clamp(0.0, 1.0) * 2.0 - 1.0).permute(3, 0, 1, 2)[None].contiguous().cpu()


def first_image(images: torch.Tensor, name: str = "image") -> torch.Tensor:
    """The first image [H, W, 3] (0..1) of an IMAGE batch; a warning says when later ones are ignored."""
    check_image_batch(images, name)
    if images.shape[0] > 1:
        warnings.warn(f"{name}: got {images.shape[0]} images; only the first is used.", stacklevel=2)
    return images[0].detach().float().cpu()


def restore_frames(video: torch.Tensor, fit: FitInfo | None = None) -> torch.Tensor:
    """Decoded video(s) [B, 3, F, H, W] (or [3, F, H, W]) in [-1, 1] as one IMAGE batch, the batch
    elements one after another. With ``fit`` each clip is mapped back by ``unfit_video`` (repeated
    frames dropped, the input's size restored); without it the frames stay at the fitted size."""
    if not isinstance(video, torch.Tensor) or video.ndim not in (4, 5):
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise InputError(f"video: shape {shape} is not [B, 3, frames, height, width] in [-1, 1].")
    clips = video[None] if video.ndim == 4 else video
    if fit is None:
        return torch.cat([video_to_image_batch(clip) for clip in clips])
    return restored_image_batch(list(clips), fit)


def restored_image_batch(clips, fit: FitInfo) -> torch.Tensor:
    """Fitted clips ([3, F, H, W] in [-1, 1], or an IMAGE batch [F, H, W, 3] of the fitted size) mapped back
    by ``fit`` into one float IMAGE batch. ComfyUI holds the whole batch, so its size is checked against
    the free memory before anything is restored (an InputError says what to change); the frames are
    then written into it one restoring step at a time (no uint8 copy of the whole clip)."""
    clips = [clips] if isinstance(clips, torch.Tensor) else list(clips)
    parts = [RestoredFrames(clip, fit) for clip in clips]
    total = sum(len(part) for part in parts)
    try:
        check_memory(total * fit.output_size[0] * fit.output_size[1] * 3 * 4 + RESTORE_BYTES,
                     f"restoring {total} frames of {fit.output_size[0]}x{fit.output_size[1]} as an IMAGE batch")
    except InputError as exc:
        raise InputError(f"{str(exc).split('; use')[0]}; leave the fit unconnected to keep the fitted size, load "
                         "fewer frames, or scale the source down first (the fit restores the source's size).") from None
    batch = torch.empty((total, parts[0].height, parts[0].width, 3), dtype=torch.float32)
    position = 0
    for part in parts:
        for frame in part:
            batch[position] = torch.from_numpy(frame).float().div_(255.0)
            position += 1
    return batch


# ---------------------------------------------------------------- LATENT and CONDITIONING

def latent_samples(latent, name: str = "samples") -> torch.Tensor:
    """The raw latents [B, C, f, h, w] of a ComfyUI LATENT dict, checked."""
    tensor = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(latent).__name__
        raise InputError(f"{name}: expected a video LATENT ({{'samples': [B, 48, frames, h, w]}}), got {got}.")
    return tensor


def conditioning_to_embeddings(conditioning, name: str = "conditioning", max_length: int = 512) -> torch.Tensor:
    """Text embeddings [1, max_length, width] float32 (CPU) from a ComfyUI CONDITIONING.

    ComfyUI's UMT5 ("wan" CLIP type) gives [1, tokens, 4096] with the padding states zeroed, at least
    512 tokens. As the core's encoder does, states past ``max_length`` are cut (with a warning) and
    shorter ones are zero-padded to ``max_length``. Only the first entry is used when there are several.
    """
    valid = isinstance(conditioning, (list, tuple)) and len(conditioning) > 0 and all(
        isinstance(entry, (list, tuple)) and len(entry) >= 1 and isinstance(entry[0], torch.Tensor)
        for entry in conditioning)
    if not valid:
        raise InputError(f"{name}: expected a CONDITIONING (a list of [tensor, dict]) from e.g. CLIPTextEncode, "
                         f"got {type(conditioning).__name__}.")
    if len(conditioning) > 1:
        warnings.warn(f"{name}: holds {len(conditioning)} conditionings (combined or concatenated); "
                      "only the first is used.", stacklevel=2)
    states = conditioning[0][0]
    if states.ndim != 3 or states.shape[0] != 1:
        raise InputError(f"{name}: text states of shape {tuple(states.shape)}; expected [1, tokens, width] "
                         "(load the text encoder with CLIPLoader type 'wan').")
    if states.shape[1] > max_length:
        warnings.warn(f"{name}: {states.shape[1]} text tokens; only the first {max_length} are used.", stacklevel=2)
        states = states[:, :max_length]
    states = states.detach().float().cpu()
    return torch.nn.functional.pad(states, (0, 0, 0, max_length - states.shape[1]))


def embeddings_to_conditioning(embeddings: torch.Tensor) -> list:
    """A ComfyUI CONDITIONING ([[states [1, tokens, width], {"pooled_output": None}]]) from text
    embeddings [1, tokens, width] (zero-padded, as ComfyUI's UMT5 zeroes its padding states too)."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 3 or embeddings.shape[0] != 1:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise InputError(f"embeddings: shape {shape} is not [1, tokens, width].")
    return [[embeddings.detach().float().cpu().clone(), {"pooled_output": None}]]


# ---------------------------------------------------------------- previews

def latent_preview_rgb(latents: torch.Tensor, frame: int | None = None) -> np.ndarray:
    """uint8 [h, w, 3]: one latent frame (the middle one by default) of the first clip of normalised
    Wan2.2 latents [B, 48, f, h, w], through the linear latent-to-RGB map (no VAE; a rough colour sketch)."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != len(WAN22_LATENT_RGB_FACTORS):
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InputError(f"latents: shape {shape} is not [B, 48, frames, h, w] Wan2.2 latents.")
    frame = latents.shape[2] // 2 if frame is None else frame
    if not -latents.shape[2] <= frame < latents.shape[2]:
        raise InputError(f"frame: {frame} is outside the {latents.shape[2]} latent frames.")
    x = latents[0, :, frame].detach().float().cpu()  # [48, h, w]
    factors = torch.tensor(WAN22_LATENT_RGB_FACTORS, dtype=torch.float32)  # [48, 3]
    bias = torch.tensor(WAN22_LATENT_RGB_BIAS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", x, factors) + bias  # about -1..1
    return ((rgb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def write_preview_gif(path, frames, fps: float, max_side: int = 512) -> Path:
    """An animated GIF of frames (uint8 [F, H, W, 3] or float 0..1), scaled to fit ``max_side``:
    the preview that every ComfyUI frontend can show (the 2024 one shows images only, no mp4)."""
    from PIL import Image  # noqa: PLC0415

    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(f"frames: shape {frames.shape} is not [frames, height, width, 3].")
    if frames.dtype != np.uint8:
        frames = np.round(np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps: {fps!r} is invalid; expected a positive frame rate.")
    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [Image.fromarray(frame).resize(size, Image.BILINEAR) if scale < 1 else Image.fromarray(frame)
              for frame in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # GIF frame times are in 10 ms units; 8 fps -> 120 ms (125 rounds to 130 in some viewers).
    duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False)
    return path


# ---------------------------------------------------------------- models on disk and in memory

def find_diffusers_folders(roots) -> dict[str, Path]:
    """{label: folder} for every Diffusers pipeline folder (one with model_index.json) under ``roots``;
    labels are DIFFUSERS_LABEL + the folder's path relative to its root, with '/' separators."""
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for current, dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                relative = Path(current).relative_to(root).as_posix()
                found.setdefault(DIFFUSERS_LABEL + relative, Path(current))
                dirs[:] = []  # a pipeline's components are not pipelines themselves
            else:
                dirs.sort()
    return dict(sorted(found.items()))
