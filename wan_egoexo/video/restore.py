"""Undoing a fit on the way out, a frame at a time: the model's frames mapped back to the source's
size (and, for ``frame_rate="source"``, resampled back to the source's rate).

``RestoredFrames`` is a sized iterable of uint8 [H, W, 3] frames that restores each fitted frame when
it is reached and keeps only the few it restored last, so writing a 4K or an 8000x8000 result holds
a few frames at the source size however long the clip is (write.write_video streams it into ffmpeg).
``unfit_video`` gathers them into one array, after checking that array against the free memory
(ComfyUI's IMAGE batches are held whole by the host, so there a clear error is the plan).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .host_memory import check_memory
from .pixels import as_tensor, resize, to_signed_unit

FRAME_RATES = ("source", "model")
RESTORE_BYTES = 256 << 20  # float32 working set of one restoring step; at least one frame
_MAX_CHUNK = 8


def source_rate_frame_map(info) -> np.ndarray:
    """For each source frame in the span the fitted clip covers, the fitted frame nearest in time.

    The span starts at the first source frame used and lasts real_frames / fitted_fps seconds (cut at
    the end of the source), so the output keeps the input's duration and motion speed."""
    first = info.source_indices[0]
    ratio = info.fitted_fps / info.source_fps  # fitted frames per source frame
    count = min(info.source_frames - first, max(1, round(info.real_frames / ratio)))
    nearest = np.floor(np.arange(count) * ratio + 0.5 + 1e-6).astype(np.int64)
    return np.minimum(nearest, info.real_frames - 1)


def output_fps(info, frame_rate: str = "model") -> float:
    """The rate to write the restored frames at: the input's ("source") or the fitted clip's ("model")."""
    if frame_rate not in FRAME_RATES:
        raise InputError(f"frame_rate: {frame_rate!r} is not supported; expected one of {FRAME_RATES}.")
    return info.source_fps if frame_rate == "source" else info.fitted_fps


def _fitted_layout(video: torch.Tensor, info) -> torch.Tensor:
    """Bring model output to channels-first [3, F, H, W] in [-1, 1] (accepts [1, 3, F, H, W] and
    channels-last frames [F, H, W, 3] as uint8 or float 0..1)."""
    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim == 4 and video.shape[0] == 3 and tuple(video.shape[2:]) == (info.height, info.width):
        return video.float()
    if video.ndim == 4 and video.shape[-1] == 3 and tuple(video.shape[1:3]) == (info.height, info.width):
        return to_signed_unit(video, "video").permute(3, 0, 1, 2)
    raise InputError(f"video: shape {tuple(video.shape)} does not match the fit ({info.width}x{info.height}); "
                     f"expected [3, frames, {info.height}, {info.width}] in [-1, 1] or "
                     f"[frames, {info.height}, {info.width}, 3].")


class RestoredFrames:
    """The fitted ``video`` mapped back by ``info`` (see the module docstring), restored as it is read.

    ``len()`` frames of ``height`` x ``width``; iterating yields uint8 [height, width, 3] frames in order."""

    def __init__(self, video, info, frame_rate: str = "model"):
        output_fps(info, frame_rate)
        self.video = _fitted_layout(as_tensor(video, "video"), info)
        if self.video.shape[1] < info.real_frames:
            raise InputError(f"video: has {self.video.shape[1]} frames but the fit used {info.real_frames} real "
                             f"frames; expected at least {info.real_frames} (usually {info.num_frames}).")
        self.info = info
        self.width, self.height = info.output_size
        self.order = source_rate_frame_map(info) if frame_rate == "source" \
            else np.arange(info.real_frames, dtype=np.int64)
        self.chunk = max(1, min(_MAX_CHUNK, RESTORE_BYTES // (self.width * self.height * 3 * 4 * 2)))

    def __len__(self) -> int:
        return int(self.order.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of all the frames as one uint8 array."""
        return len(self) * self.height * self.width * 3

    def _restore(self, start: int, stop: int) -> np.ndarray:
        x, y, w, h = self.info.content_box
        chunk = self.video[:, start:stop, y:y + h, x:x + w].permute(1, 0, 2, 3).clamp(-1.0, 1.0)
        restored = resize(chunk, self.height, self.width)
        del chunk
        pixels = restored.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    def __iter__(self):
        start, held = -1, None
        for index in self.order:
            index = int(index)
            if held is None or not start <= index < start + len(held):
                held = None  # the previous chunk goes before the next one is made
                start = index
                held = self._restore(start, min(start + self.chunk, self.info.real_frames))
            yield held[index - start]


def unfit_video(video, info, frame_rate: str = "model") -> np.ndarray:
    """Undo fit_video into one array: uint8 [frames, H, W, 3], H x W = ``info.output_size`` (the source
    size, or the kept region's for a "crop" that cut more than the automatic size's few pixels).

    frame_rate "model": the real fitted frames, to write at ``info.output_fps``; "source": resampled
    back to the input's frame rate (nearest frame in time), as many frames as the input had over the
    covered span, to write at ``info.source_fps``. The array is checked against the free memory first;
    to write a file without holding it, hand RestoredFrames to write_video."""
    frames = RestoredFrames(video, info, frame_rate)
    check_restored_memory(frames)
    result = np.empty((len(frames), frames.height, frames.width, 3), dtype=np.uint8)
    for position, frame in enumerate(frames):
        result[position] = frame
    return result


def check_restored_memory(frames: RestoredFrames, bytes_per_value: int = 1) -> None:
    """Refuse, before restoring, a result that cannot be held: the message says what to change."""
    try:
        check_memory(frames.nbytes * bytes_per_value + RESTORE_BYTES,
                     f"restoring {len(frames)} frames of {frames.width}x{frames.height} at the source's size")
    except InputError as exc:
        raise InputError(f"{exc} Use fewer output frames (frame rate 'model' / --output-rate model, or fewer "
                         "--frames), or scale the source down first: the output is restored to its size.") from None
