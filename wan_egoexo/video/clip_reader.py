"""Reading a clip fitted to the model grid while holding only what the fit uses.

``open_clip`` learns a clip's size, frame times and audio without decoding a frame (video files
through video_probe, frame folders and stills from their image headers); ``read_fitted_clip``
plans the fit (video_fit.plan_fit), checks that the planned frames fit in memory, then decodes
only those frames, resized as they are read (video_decode for files; one image at a time for
frame folders). Peak memory therefore grows with the frames translated, not with the file's
length or resolution. Anything assumed or lost on the way (untrustworthy timestamps, a truncated
file, undecodable frames) is returned as notes for the user, and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioClip, SourceAudio, read_audio
from ..errors import InputError
from .decode import decode_frames, fill_missing
from .fit import FitInfo, FitOptions, fitted_video_from, plan_fit
from .read_write import (
    IMAGE_SUFFIXES,
    check_frame_size,
    image_size,
    list_frame_files,
    read_image,
)
from .probe import AudioStream, VideoProbe, check_source_pixels, probe_video_file
from .timing import Timeline, constant_rate, timeline_from_probe

logger = logging.getLogger(__name__)

DEFAULT_INPUT_FPS = 8.0  # the rate given to frame folders and stills unless one is stated


@dataclass
class ClipSource:
    """A clip as probed: a video file, a frame folder or a still, with its displayed size and timeline."""

    path: Path
    kind: str  # "video", "frames" or "image"
    width: int
    height: int
    timeline: Timeline
    probe: VideoProbe | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def audio(self) -> AudioStream | None:
        return self.probe.audio if self.probe is not None else None

    @property
    def notes(self) -> tuple[str, ...]:
        return self.timeline.notes


def open_clip(path, input_fps: float | None = None) -> ClipSource:
    """Probe ``path``; ``input_fps`` is the rate of a frame folder or still (default 8 fps)."""
    path = Path(path)
    rate = DEFAULT_INPUT_FPS if input_fps is None else input_fps
    if not path.exists():
        raise InputError(f"{path}: no such video file or frame folder.")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = list_frame_files(path) if path.is_dir() else [path]
        width, height = image_size(files[0])
        check_source_pixels(files[0], width, height)
        return ClipSource(path, "frames" if path.is_dir() else "image", width, height,
                          constant_rate(len(files), rate), files=files)
    probe = probe_video_file(path)
    check_source_pixels(path, probe.width, probe.height)
    return ClipSource(path, "video", probe.width, probe.height, timeline_from_probe(probe), probe=probe)


# ---------------------------------------------------------------- memory

def available_memory() -> int | None:
    """Bytes the system can still hand out (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(size: int, what: str) -> None:
    """Refuse, before allocating, work that needs more than the free memory; the message says how much."""
    free = available_memory()
    if free is not None and size > free:
        raise InputError(f"out of memory: {what} needs {size / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
                         "are free; use fewer frames (--frames), a later --start-frame or a smaller size.")


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


def read_fitted_clip(source, options: FitOptions, input_fps: float | None = None) -> FittedClip:
    """Fit a clip (a path or an open ClipSource) to the grid, decoding only the frames the fit uses."""
    if not isinstance(source, ClipSource):
        source = open_clip(source, input_fps)
    info = plan_clip_fit(source, options)
    notes = list(source.notes)
    if source.kind == "video":
        video = fitted_video_from(info, _frames_from_file(source, info, notes), cropped=True)
    else:
        video = fitted_video_from(info, _frames_from_images(source, info), cropped=True)
    for note in notes:
        logger.warning(note)
    return FittedClip(video, info, source, notes)
