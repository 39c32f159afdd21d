"""Fitting any clip or image to the model grid (frame rate, 4k+1 frames, multiple-of-32 size), and undoing it.

``plan_fit`` decides everything from the source's size and frame times (video_timing picks the
frames by time: nearest source frame at the target fps, or every Nth frame; never interpolated;
grid_size picks the automatic size). ``fit_video`` applies a plan to frames in memory: pads the
count to 4k+1 by repeating the last real frame and maps a source region onto the target size by
centre crop, letterbox (pad) or stretch; the streaming reader (clip_reader) applies the same plan
to a file without holding it. Everything needed to go back is kept in ``FitInfo``; restore (re-exported
here) drops the repeated frames and maps the target region back to ``FitInfo.output_size``, a frame at a
time.

Geometry is kept as two boxes (x, y, width, height):
  crop_box     the source region that was used (the centre crop in "crop" mode, else the whole frame);
  content_box  where that region sits in the fitted frame (the letterbox in "pad" mode, else all of it).
Undoing therefore yields the source size for "pad" and "stretch", and for "crop" when the crop cut at most
2% of a side (the automatic size cuts under 1%: those pixels are stretched back); a larger crop yields the
size of the kept region (the cut-away borders never reached the model, so they cannot come back).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..errors import InputError
from .grid_size import GRID, target_size
from .pixels import Box, allocate, as_tensor, check_frames, map_region, to_signed_unit
from .restore import FRAME_RATES, RestoredFrames, output_fps, source_rate_frame_map, unfit_video  # noqa: F401
from .timing import Timeline, constant_rate, plan_frames

MODES = ("crop", "pad", "stretch")
_CHUNK = 8  # frames resized at a time, to bound memory for long high-resolution clips
# A crop that cut at most 2% of a side (the automatic size cuts under 1%) is stretched back to the source's
# size on output: an editor gets the clip's own size back, and a 2% stretch cannot be seen.
RESTORE_CROP = 0.02


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_whole(value) -> bool:
    return _is_number(value) and math.isfinite(value) and int(value) == value


def _nearest_multiples(value: float) -> str:
    low = max(GRID, math.floor(value / GRID) * GRID)
    high = max(GRID, math.ceil(value / GRID) * GRID)
    return f"{low}" if low == high else f"{low} or {high}"


@dataclass
class FitOptions:
    """How to fit a clip. width/height None = automatic (see ``choose_target_size``).

    Time: ``fps`` resamples to that rate (nearest source frame); set ``fps=None`` and ``frame_stride=N``
    to take every Nth frame instead; with both None every frame is used at the source rate.
    """

    width: int | None = None
    height: int | None = None
    max_frames: int | None = 49  # None: the whole clip (long clips are sampled in sliding windows)
    fps: float | None = 8.0
    frame_stride: int | None = None
    start_frame: int = 0
    mode: str = "crop"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_whole(value) or value < GRID or value % GRID:
                finite = _is_number(value) and math.isfinite(value)
                nearest = f"; nearest valid values: {_nearest_multiples(value)}" if finite else ""
                raise InputError(f"{name}: {value!r} is not a positive multiple of {GRID}{nearest}.")
        n = self.max_frames
        if n is not None and (not _is_whole(n) or n < 1 or (n - 1) % 4):
            low = max(1, math.floor((n - 1) / 4) * 4 + 1) if _is_number(n) and math.isfinite(n) else 45
            raise InputError(f"max_frames: {n!r} is not of the form 4k+1 (1, 5, 9, ..., 49); "
                             f"nearest valid values: {low} or {low + 4}.")
        if self.fps is not None and self.frame_stride is not None:
            raise InputError(f"fps ({self.fps!r}) and frame_stride ({self.frame_stride!r}) are mutually exclusive; "
                             "set fps=None to take every Nth frame, or frame_stride=None to resample to fps.")
        if self.fps is not None and not (_is_number(self.fps) and math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"fps: {self.fps!r} is invalid; expected a positive frame rate or None.")
        stride = self.frame_stride
        if stride is not None and (not _is_whole(stride) or stride < 1):
            raise InputError(f"frame_stride: {stride!r} is invalid; expected a positive integer or None.")
        if not _is_whole(self.start_frame) or self.start_frame < 0:
            raise InputError(f"start_frame: {self.start_frame!r} is invalid; expected an integer >= 0.")
        if self.mode not in MODES:
            raise InputError(f"mode: {self.mode!r} is not supported; expected one of {', '.join(MODES)}.")
        # Whole-number floats (e.g. from a UI or JSON) become ints so they can index and slice.
        for name in ("width", "height", "max_frames", "frame_stride", "start_frame"):
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))


@dataclass
class FitInfo:
    """Everything ``unfit_video`` needs; JSON-serialisable through to_dict / from_dict.

    ``padded_frames`` counts the copies of the last real frame appended to reach 4k+1 frames;
    the fitted clip has ``real_frames + padded_frames`` frames.
    """

    mode: str
    source_width: int
    source_height: int
    source_frames: int
    source_fps: float
    width: int
    height: int
    fitted_fps: float
    source_indices: list[int]
    real_frames: int
    padded_frames: int
    crop_box: Box
    content_box: Box
    start_time: float = 0.0  # source time (s from the file's start) of the first frame used

    @property
    def num_frames(self) -> int:
        return self.real_frames + self.padded_frames

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) unfit_video restores: the source's, unless "crop" cut more than RESTORE_CROP of a
        side (then the kept region's)."""
        _, _, kept_w, kept_h = self.crop_box
        if self.mode != "crop" or min(kept_w / self.source_width, kept_h / self.source_height) \
                >= 1 - RESTORE_CROP:
            return self.source_width, self.source_height
        return kept_w, kept_h

    @property
    def output_fps(self) -> float:
        """Rate at which the unfitted frames cover the same time span as the source frames used."""
        return self.fitted_fps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FitInfo":
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data and name != "start_time"]
        if missing:
            raise InputError(f"fit info: missing {', '.join(missing)}; expected a dict made by FitInfo.to_dict().")
        values = {name: data[name] for name in names if name in data}
        values["source_indices"] = [int(i) for i in values["source_indices"]]
        values["crop_box"] = tuple(int(v) for v in values["crop_box"])
        values["content_box"] = tuple(int(v) for v in values["content_box"])
        return cls(**values)


# ---------------------------------------------------------------- planning

def choose_target_size(source_width: int, source_height: int, options: FitOptions) -> tuple[int, int]:
    """(width, height) to fit to: both given, one given (the other from the aspect ratio), or automatic
    (the grid size nearest the source's aspect at about the trained pixel count; see grid_size)."""
    return target_size(source_width, source_height, options.width, options.height)


def select_frame_indices(num_frames: int, source_fps: float, options: FitOptions) -> tuple[list[int], float]:
    """Source frame indices to use, and the frame rate they represent, for a constant-rate clip
    (video_timing.plan_frames: nearest frame in time at ``options.fps``, or every Nth frame)."""
    plan = plan_frames(constant_rate(num_frames, source_fps), options)
    return plan.indices, plan.fitted_fps


def plan_fit(source_width: int, source_height: int, timeline: Timeline, options: FitOptions) -> FitInfo:
    """Everything about a fit, decided before any pixel is touched: size, boxes and frames."""
    options.validate()
    width, height = choose_target_size(source_width, source_height, options)
    plan = plan_frames(timeline, options)
    crop_box, content_box = plan_boxes(source_width, source_height, width, height, options.mode)
    real = len(plan.indices)
    return FitInfo(mode=options.mode, source_width=int(source_width), source_height=int(source_height),
                   source_frames=timeline.num_frames, source_fps=timeline.average_fps, width=width, height=height,
                   fitted_fps=plan.fitted_fps, source_indices=[int(i) for i in plan.indices], real_frames=real,
                   padded_frames=(real - 1 + 3) // 4 * 4 + 1 - real, crop_box=crop_box, content_box=content_box,
                   start_time=plan.start_time)


def _centre_crop_box(source_width: int, source_height: int, width: int, height: int) -> Box:
    if source_width * height > source_height * width:  # source is wider than the target
        kept_w, kept_h = min(source_width, max(1, round(source_height * width / height))), source_height
    else:
        kept_w, kept_h = source_width, min(source_height, max(1, round(source_width * height / width)))
    return ((source_width - kept_w) // 2, (source_height - kept_h) // 2, kept_w, kept_h)


def _letterbox_box(source_width: int, source_height: int, width: int, height: int) -> Box:
    scale = min(width / source_width, height / source_height)
    inner_w = min(width, max(1, round(source_width * scale)))
    inner_h = min(height, max(1, round(source_height * scale)))
    return ((width - inner_w) // 2, (height - inner_h) // 2, inner_w, inner_h)


def plan_boxes(source_width: int, source_height: int, width: int, height: int, mode: str) -> tuple[Box, Box]:
    """(crop_box in source pixels, content_box in target pixels) for a mode; see the module docstring."""
    full_source = (0, 0, int(source_width), int(source_height))
    full_target = (0, 0, int(width), int(height))
    if mode == "crop":
        return _centre_crop_box(source_width, source_height, width, height), full_target
    if mode == "pad":
        return full_source, _letterbox_box(source_width, source_height, width, height)
    if mode == "stretch":
        return full_source, full_target
    raise InputError(f"mode: {mode!r} is not supported; expected one of {', '.join(MODES)}.")


def fitted_video_from(info: FitInfo, frames_of, cropped: bool = False) -> torch.Tensor:
    """The fitted video [3, F, H, W] in [-1, 1] that ``info`` describes.

    ``frames_of(indices)`` returns the source frames with those indices (uint8 [n, h, w, 3], or float
    0..1); it is asked a few frames at a time, each frame once, so only a few full-size frames exist at
    any moment. ``cropped``: the frames are already the crop box (at any size; they are resized to the
    content box), as the streaming reader delivers them.
    """
    real = info.real_frames
    video = allocate((3, info.num_frames, info.height, info.width), torch.float32,
                     f"the fitted clip ({info.num_frames} frames of {info.width}x{info.height})")
    unique, where = np.unique(np.asarray(info.source_indices), return_inverse=True)
    for chunk_start in range(0, len(unique), _CHUNK):
        chunk = unique[chunk_start:chunk_start + _CHUNK]
        picked = as_tensor(frames_of(chunk), "frames")
        check_frames(picked, "frames")
        picked = to_signed_unit(picked, "frames").permute(0, 3, 1, 2)
        crop = (0, 0, picked.shape[3], picked.shape[2]) if cropped else info.crop_box
        fitted = map_region(picked, crop, info.content_box, info.width, info.height)
        for position in np.nonzero((where >= chunk_start) & (where < chunk_start + len(chunk)))[0]:
            video[:, position] = fitted[where[position] - chunk_start]
    video[:, real:] = video[:, real - 1:real]
    return video


def fit_video(frames, fps: float, options: FitOptions | None = None) -> tuple[torch.Tensor, FitInfo]:
    """Fit frames (uint8 [F, H, W, 3], or float 0..1) at a constant ``fps`` to the model grid.

    Returns the video as float32 [3, F', H', W'] in [-1, 1] (F' = 4k+1, H' and W' multiples of 32)
    and the FitInfo that undoes it.
    """
    options = options or FitOptions()
    options.validate()
    frames = as_tensor(frames, "frames")
    check_frames(frames, "frames")
    if isinstance(fps, bool) or not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps: {fps!r} is invalid; expected the source video's positive frame rate.")
    num_source, source_height, source_width = (int(d) for d in frames.shape[:3])
    info = plan_fit(source_width, source_height, constant_rate(num_source, float(fps)), options)
    info.source_fps = float(fps)
    video = fitted_video_from(info, lambda chunk: frames[torch.from_numpy(chunk)])
    return video, info


# ---------------------------------------------------------------- still images

def resize_image(image, width: int, height: int, mode: str = "stretch") -> torch.Tensor:
    """A still image (uint8 [H, W, 3] or float 0..1) as a 1-frame video [3, 1, height, width] in [-1, 1],
    by "stretch", centre "crop" or letterbox "pad"."""
    image = as_tensor(image, "image")
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise InputError(f"image: shape {tuple(image.shape)} is invalid; expected [height, width, 3].")
    for name, value in (("width", width), ("height", height)):
        if not _is_whole(value) or value < 1:
            raise InputError(f"{name}: {value!r} is invalid; expected a positive integer.")
    source_height, source_width = int(image.shape[0]), int(image.shape[1])
    crop_box, content_box = plan_boxes(source_width, source_height, int(width), int(height), mode)
    pixels = to_signed_unit(image, "image").permute(2, 0, 1)[None]
    fitted = map_region(pixels, crop_box, content_box, int(width), int(height))
    return fitted[0].unsqueeze(1).contiguous()


def letterbox_image(image, width: int, height: int) -> torch.Tensor:
    """Fit a still image inside width x height, padded with black: [3, 1, height, width] in [-1, 1]
    (the reference image for ego -> exo)."""
    return resize_image(image, width, height, mode="pad")


def summarize(info: FitInfo) -> str:
    """One log line, e.g. '1920x1080 30fps 300 frames -> 1280x704 8fps 49 frames (crop), frames 0..180 used'."""
    line = (f"{info.source_width}x{info.source_height} {info.source_fps:.4g}fps {info.source_frames} frames -> "
            f"{info.width}x{info.height} {info.fitted_fps:.4g}fps {info.num_frames} frames ({info.mode}), "
            f"frames {info.source_indices[0]}..{info.source_indices[-1]} used")
    if info.padded_frames:
        line += f", last frame repeated {info.padded_frames}x"
    return line
