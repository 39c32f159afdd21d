"""Reading a clip fitted to the model grid while holding only what the fit uses.

``clip_source.open_clip`` learns a clip's size, frame times and audio without decoding a frame;
``read_fitted_clip``
plans the fit (video_fit.plan_fit), checks that the planned frames fit in memory, then decodes
only those frames, resized as they are read (video_decode for files; one image at a time for
frame folders). Peak memory therefore grows with the frames translated, not with the file's
length or resolution. Anything assumed or lost on the way (untrustworthy timestamps, a truncated
file, undecodable frames) is returned as notes for the user, and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..option_ranges import check_clip_frames
from .audio import AudioClip, SourceAudio, read_audio
from .clip_source import ClipSource, open_clip
from .decode import decode_frames, fill_missing
from .fit import FitInfo, FitOptions, fitted_video_from, plan_fit
from .host_memory import check_memory
from .read_write import check_frame_size, read_image

logger = logging.getLogger(__name__)

def fitted_bytes(info: FitInfo) -> int:
    """Memory a fitted clip takes: the float32 video plus the decoded frames (uint8, at the content size)."""
    unique = len(set(info.source_indices))
    content = info.content_box[2] * info.content_box[3] * 3
    return info.num_frames * info.width * info.height * 3 * 4 + unique * content


def plan_clip_fit(source: ClipSource, options: FitOptions) -> FitInfo:
    """Plan a clip's fit and check that it can be read: the planned frames fit in memory and, for a frame
    folder, every frame used has the first frame's size (from the headers, before a pixel is decoded)."""
    info = plan_fit(source.width, source.height, source.timeline, options)
    check_memory(fitted_bytes(info), f"{source.path}: fitting {info.num_frames} frames of {info.width}x{info.height}")
    if source.kind == "frames":
        for index in sorted(set(info.source_indices)):
            check_frame_size(source.files[index], source.files[0], (source.width, source.height))
    return info


# ---------------------------------------------------------------- reading

@dataclass
class FittedClip:
    """A clip fitted to the grid: video float32 [3, F, H, W] in [-1, 1], how it was fitted, notes."""

    video: torch.Tensor
    info: FitInfo
    source: ClipSource
    notes: list[str]

    def source_audio(self) -> SourceAudio | None:
        """The source's audio from the first frame used (for writing the translated video)."""
        stream = self.source.audio
        if stream is None:
            return None
        return SourceAudio(str(self.source.path), self.info.start_time, stream.codec, stream.sample_rate,
                           stream.channels)

    def audio_samples(self, seconds: float | None = None) -> AudioClip | None:
        """The source's audio samples for the span the fitted frames cover (or ``seconds`` from its start)."""
        span = self.info.real_frames / self.info.fitted_fps if seconds is None else seconds
        return read_audio(self.source.path, self.source.audio, self.info.start_time, span)


def _frames_from_file(source: ClipSource, info: FitInfo, notes: list[str]):
    found, _ = decode_frames(source.probe, source.timeline, info.source_indices, info.crop_box,
                             (info.content_box[2], info.content_box[3]))
    found, missing = fill_missing(found, info.source_indices, source.timeline.times)
    if missing:
        notes.append(f"{source.path}: {len(missing)} of the {len(set(info.source_indices))} frames needed could "
                     "not be decoded (damaged data); the nearest readable frames stand in for them.")
    return lambda chunk: np.stack([found[int(i)] for i in chunk])


def _frames_from_images(source: ClipSource, info: FitInfo):
    size = (info.content_box[2], info.content_box[3])

    def frames_of(chunk):
        return np.stack([read_image(source.files[int(i)], box=info.crop_box, reduce_to=size) for i in chunk])

    return frames_of


def read_fitted_clip(source, options: FitOptions, input_fps: float | None = None,
                     frame_limit: bool = False) -> FittedClip:
    """Fit a clip (a path or an open ClipSource) to the grid, decoding only the frames the fit uses.
    ``frame_limit``: refuse, before decoding, a fit of more than MAX_CLIP_FRAMES frames (what the nodes
    that take an IMAGE clip accept)."""
    if not isinstance(source, ClipSource):
        source = open_clip(source, input_fps)
    info = plan_clip_fit(source, options)
    if frame_limit:
        check_clip_frames(info.num_frames, "frames")
    notes = list(source.notes)
    if source.kind == "video":
        video = fitted_video_from(info, _frames_from_file(source, info, notes), cropped=True)
    else:
        video = fitted_video_from(info, _frames_from_images(source, info), cropped=True)
    for note in notes:
        logger.warning(note)
    return FittedClip(video, info, source, notes)
