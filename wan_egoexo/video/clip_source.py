"""Probing a clip, whatever it is: a video file (through probe, ffprobe-like, no frame decoded), a
folder of frames or a still image (from their image headers). The one probe every reader starts from:
``open_clip`` for the fitted readers and preflight, ``probe_video`` (the same probe, without the audio
stream, as a tuple) for callers that only want the count, rate and size, such as the trainer's dataset
checks. Both refuse frames over the pixel limit from the header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .containers import check_not_a_loop
from .probe import AudioStream, VideoProbe, check_source_pixels, probe_video_file
from .read_write import IMAGE_SUFFIXES, image_size, list_frame_files
from .timing import Timeline, constant_rate, timeline_from_probe

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


def open_clip(path, input_fps: float | None = None, audio: bool = True) -> ClipSource:
    """Probe ``path``; ``input_fps`` is the rate of a frame folder or still (default 8 fps); ``audio``
    False skips the file's audio stream."""
    path = Path(path)
    rate = DEFAULT_INPUT_FPS if input_fps is None else input_fps
    if not path.exists():
        check_not_a_loop(path)
        raise InputError(f"{path}: no such video file or frame folder.")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = list_frame_files(path) if path.is_dir() else [path]
        width, height = image_size(files[0])
        check_source_pixels(files[0], width, height)
        return ClipSource(path, "frames" if path.is_dir() else "image", width, height,
                          constant_rate(len(files), rate), files=files)
    probe = probe_video_file(path, audio=audio)
    check_source_pixels(path, probe.width, probe.height)
    return ClipSource(path, "video", probe.width, probe.height, timeline_from_probe(probe), probe=probe)


def probe_video(path: str | os.PathLike, frame_folder_fps: float = DEFAULT_INPUT_FPS) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) of a video file, frame folder or image, without decoding pixels:
    ``open_clip`` without the audio stream."""
    source = open_clip(path, frame_folder_fps, audio=False)
    return source.timeline.num_frames, source.timeline.average_fps, int(source.width), int(source.height)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames, from the file's packets (nothing is decoded)."""
    return probe_video(path)[0]
