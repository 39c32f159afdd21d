"""When each source frame is shown, and which of them a fit uses: frames are placed by their
presentation timestamps, never by an average frame rate.

A ``Timeline`` holds the time of every frame of a clip (seconds from the file's start) and when the
last one stops being shown. From a probed file its times are the packets' timestamps; they are
trusted when they are unique and their average rate is plausible for video (1 to 1000 fps). Any
other clip is taken as a constant rate, and the timeline carries a note saying what was assumed;
notes also say how much of a truncated file could be read.

``plan_frames`` then picks, for a FitOptions, the source frames the model sees: at ``fps``, output
frame k shows the source frame nearest in time to t0 + k / fps (ties to the later one), for as long
as the frame's centre lies inside the clip, so the fitted clip lasts as long as the input span it
covers to within half an output frame, for constant, variable and gappy rates alike; with
``frame_stride`` N it takes every Nth frame at the average rate / N.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

MIN_TRUSTED_FPS = 1.0  # an average below this is a broken header (0.002 fps), not a video
MAX_TRUSTED_FPS = 1000.0  # above this it is a time-base mix-up (90000 fps), not a video
DEFAULT_ASSUMED_FPS = 8.0  # the model's rate: each frame of a rate-less clip is used once by default
MAX_PLANNED_FRAMES = 100_000  # frames one run may translate (the latents of all of them stay in memory)


@dataclass(frozen=True)
class Timeline:
    """Presentation times (seconds, ascending) of a clip's frames and when its last frame ends.

    ``by_pts``: decoded frames can be matched to these times by their timestamps (else by their
    position). ``notes``: warnings for the user (assumptions, truncation), empty for a sound file.
    """

    times: np.ndarray
    end: float
    by_pts: bool = True
    notes: tuple[str, ...] = field(default=())
    constant_fps: float | None = None  # set for a constant-rate timeline: its exact rate

    @property
    def num_frames(self) -> int:
        return int(self.times.shape[0])

    @property
    def duration(self) -> float:
        return float(self.end - self.times[0])

    @property
    def average_fps(self) -> float:
        """Frames per second over the clip: from the spacing of the frames (one frame: from its duration)."""
        if self.constant_fps is not None:
            return self.constant_fps
        if self.num_frames > 1 and self.times[-1] > self.times[0]:
            return float((self.num_frames - 1) / (self.times[-1] - self.times[0]))
        return float(1.0 / max(self.duration, 1e-9))


def constant_rate(num_frames: int, fps: float, start: float = 0.0, notes=()) -> Timeline:
    """A clip of ``num_frames`` frames at a constant ``fps`` (frame folders, decoded arrays, assumptions)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps: {fps!r} is invalid; expected the source video's positive frame rate.")
    if num_frames < 1:
        raise InputError(f"frames: {num_frames} frames; expected at least one.")
    times = start + np.arange(num_frames, dtype=np.float64) / float(fps)
    return Timeline(times, float(start + num_frames / float(fps)), by_pts=False, notes=tuple(notes),
                    constant_fps=float(fps))


def _plausible(fps: float) -> bool:
    return math.isfinite(fps) and MIN_TRUSTED_FPS <= fps <= MAX_TRUSTED_FPS


def _assumed_rate(probe, count: int) -> float:
    if _plausible(probe.stated_fps):
        return float(probe.stated_fps)
    declared = probe.declared_duration
    if declared and declared > 0 and _plausible(count / declared):
        return count / declared
    return DEFAULT_ASSUMED_FPS


def _distrust_reason(times: np.ndarray, count: int, stated_fps: float) -> str | None:
    if count > 1 and (np.diff(times) <= 0).any():
        repeated = int((np.diff(times) <= 0).sum())
        return f"{repeated} frame(s) share a timestamp with the frame before"
    if count > 1:
        rate = (count - 1) / (times[-1] - times[0])
        if not _plausible(rate):
            return f"its {count} frames span {times[-1] - times[0]:.4g} s, i.e. {rate:.4g} fps"
    elif not _plausible(stated_fps or DEFAULT_ASSUMED_FPS):
        return f"its one frame is stated to run at {stated_fps:.4g} fps"
    return None


def _last_duration(times: np.ndarray, durations: np.ndarray, rate_hint: float) -> float:
    """How long the last frame is shown: its own duration when near the typical spacing, else the typical
    spacing (muxers often store a placeholder, e.g. 1 ms, for the last frame)."""
    typical = float(np.median(np.diff(times))) if times.shape[0] > 1 else 1.0 / rate_hint
    last = float(durations[-1]) if durations.shape[0] else 0.0
    return last if typical / 2 <= last <= 4 * typical else typical


def timeline_from_probe(probe) -> Timeline:
    """The Timeline of a probed file (video_probe.VideoProbe), with notes on anything assumed."""
    count = probe.num_frames
    times = probe.seconds(probe.pts)
    times = times - min(0.0, float(times[0]))  # an edit list can start a hair before zero
    reason = _distrust_reason(times, count, probe.stated_fps)
    if reason is not None:
        rate = _assumed_rate(probe, count)
        timeline = constant_rate(count, rate, float(times[0]))
        notes = [f"{probe.path}: its timestamps cannot be trusted ({reason}); assuming a constant {rate:.4g} fps "
                 f"({frames(count)}, {count / rate:.2f} s)."]
        notes += _truncation_notes(probe, timeline, declared=False)
    else:
        rate_hint = probe.stated_fps if _plausible(probe.stated_fps) else DEFAULT_ASSUMED_FPS
        end = float(times[-1]) + _last_duration(times, probe.seconds(probe.durations), rate_hint)
        timeline = Timeline(times, end, by_pts=probe.has_pts)
        notes = _truncation_notes(probe, timeline)
    return dataclasses.replace(timeline, notes=tuple(notes))


def frames(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"


def _truncation_notes(probe, timeline: Timeline, declared: bool = True) -> list[str]:
    """How much of a damaged file is readable; ``declared``: also compare with the container's stated length
    (meaningless when the timestamps were not trusted)."""
    readable = f"only the first {timeline.end:.2f} s ({frames(timeline.num_frames)}) are readable"
    if probe.damage:
        return [f"{probe.path}: {probe.damage}; {readable} and are translated."]
    stated = probe.declared_duration
    if declared and stated and stated - timeline.end > max(0.5, 2.0 / timeline.average_fps):
        return [f"{probe.path}: the file declares {stated:.2f} s but {readable}; it is probably truncated, "
                "and the readable part is translated."]
    return []


@dataclass(frozen=True)
class FramePlan:
    """The source frames a fit uses (indices into the timeline, repeats allowed), their rate, and the
    span of source time they cover: from ``start_time`` for ``len(indices) / fitted_fps`` seconds."""

    indices: list[int]
    fitted_fps: float
    start_time: float

    @property
    def covered_seconds(self) -> float:
        return len(self.indices) / self.fitted_fps


def _nearest(times: np.ndarray, moments: np.ndarray, first: int) -> np.ndarray:
    """For each moment, the index (>= first) of the frame shown nearest to it; ties go to the later frame."""
    later = np.clip(np.searchsorted(times, moments, side="left"), first, times.shape[0] - 1)
    earlier = np.maximum(later - 1, first)
    take_earlier = (moments - times[earlier]) < (times[later] - moments) - 1e-9
    return np.where(take_earlier, earlier, later)


def plan_frames(timeline: Timeline, options) -> FramePlan:
    """The frames a fit (video_fit.FitOptions) takes from a clip; see the module docstring."""
    count = timeline.num_frames
    start = int(options.start_frame)
    if start >= count:
        raise InputError(f"start_frame: {start} is past the end of the video ({count} frames); "
                         f"expected 0..{count - 1}.")
    limit = math.inf if options.max_frames is None else int(options.max_frames)
    t0 = float(timeline.times[start])
    if options.fps is not None:
        fps = float(options.fps)
        wanted = max(1, math.floor((timeline.end - t0) * fps + 0.5))  # frames whose centre is inside the clip
        total = int(min(limit, wanted))
        _check_count(total, options)
        moments = t0 + np.arange(total, dtype=np.float64) / fps
        return FramePlan(_nearest(timeline.times, moments, start).tolist(), fps, t0)
    stride = int(options.frame_stride or 1)
    picked = range(start, count, stride)[: None if limit == math.inf else int(limit)]
    _check_count(len(picked), options)
    return FramePlan(list(picked), timeline.average_fps / stride, t0)


def _check_count(total: int, options) -> None:
    if total > MAX_PLANNED_FRAMES:
        raise InputError(f"frames: this fit would translate {total:,} frames; expected at most "
                         f"{MAX_PLANNED_FRAMES:,} per run (about {MAX_PLANNED_FRAMES / 8 / 3600:.1f} hours at 8 fps): "
                         "set max_frames (--frames) and start_frame (--start-frame) to translate a part.")
