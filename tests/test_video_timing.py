"""Frames placed by their timestamps: which source frames a fit takes from constant, variable and broken
timelines, checked against a brute-force computation, and what is assumed when timestamps lie."""

from fractions import Fraction

import numpy as np
import pytest

from wan_egoexo.errors import InputError
from wan_egoexo.video.fit import FitOptions
from wan_egoexo.video.probe import VideoProbe
from wan_egoexo.video.timing import MAX_PLANNED_FRAMES, Timeline, constant_rate, plan_frames, timeline_from_probe


def brute_force(times, end, fps, start=0, limit=49):
    """Independent reference: output frame k at t0 + k / fps shows the frame with the nearest time (ties to the
    later), for every k whose middle t0 + (k + 1/2) / fps lies inside the clip (at least one frame)."""
    t0 = times[start]
    chosen, k = [], 0
    while len(chosen) < limit and (t0 + (k + 0.5) / fps <= end + 1e-9 or k == 0):
        moment = t0 + k / fps
        distance = np.round(np.abs(np.asarray(times[start:]) - moment), 9)
        chosen.append(start + int(np.flatnonzero(distance == distance.min())[-1]))
        k += 1
    return chosen


def probe(ticks, durations=None, base=Fraction(1, 90000), stated_fps=30.0, declared=None, damage=None, has_pts=True):
    ticks = np.asarray(ticks, dtype=np.int64)
    durations = np.full(ticks.shape, 3000, np.int64) if durations is None else np.asarray(durations, np.int64)
    return VideoProbe(path="clip.mp4", width=64, height=48, rotation=0, codec="h264", stated_fps=stated_fps,
                      declared_duration=declared, time_base=base, pts=ticks, durations=durations, has_pts=has_pts,
                      damage=damage, audio=None)


VFR = np.cumsum([0] + [3000] * 23 + [11250, 11250, 9000, 13500] * 6) [:49]  # 30 fps, then about 8 fps
DROPPED = np.array([i * 3000 for i in range(90) if i % 5 != 4])  # 30 fps with every fifth frame missing


@pytest.mark.parametrize("ticks", [VFR, DROPPED, np.arange(0, 120) * 3003], ids=["vfr", "dropped", "29.97"])
@pytest.mark.parametrize("fps, start", [(8.0, 0), (8.0, 7), (24.0, 3)])
def test_resampling_follows_the_timestamps(ticks, fps, start):
    timeline = timeline_from_probe(probe(ticks))
    assert timeline.notes == () and timeline.by_pts
    plan = plan_frames(timeline, FitOptions(fps=fps, start_frame=start, max_frames=None))
    assert plan.indices == brute_force(timeline.times, timeline.end, fps, start, limit=10**6)
    # the fitted clip lasts as long as the input from the start frame, to within half an output frame
    assert abs(plan.covered_seconds - (timeline.end - timeline.times[start])) <= 0.5 / fps + 1e-9


def test_an_average_rate_would_get_variable_rate_clips_wrong():
    """The old reader's rule (frames spaced by the average rate) picks other frames than their timestamps do."""
    timeline = timeline_from_probe(probe(VFR))
    by_time = plan_frames(timeline, FitOptions(fps=8.0, max_frames=None)).indices
    by_average = plan_frames(constant_rate(len(VFR), timeline.average_fps), FitOptions(fps=8.0, max_frames=None))
    assert by_time != by_average.indices
    seconds = float(timeline.end)
    assert len(by_time) == round(seconds * 8)  # the input's duration at 8 fps


def test_stride_and_every_frame_use_the_average_rate():
    timeline = timeline_from_probe(probe(np.arange(0, 30) * 3000))  # 30 fps
    plan = plan_frames(timeline, FitOptions(fps=None, frame_stride=3, start_frame=2, max_frames=None))
    assert plan.indices == list(range(2, 30, 3)) and plan.fitted_fps == pytest.approx(10.0)
    assert plan_frames(timeline, FitOptions(fps=None, max_frames=5)).indices == [0, 1, 2, 3, 4]


def test_untrustworthy_timestamps_are_replaced_by_a_stated_assumption():
    # one frame that claims to last 500 s (0.002 fps): not 4000 output frames, one
    single = timeline_from_probe(probe([0], durations=[500 * 90000], stated_fps=0.002))
    assert "cannot be trusted" in single.notes[0] and "assuming a constant 8 fps" in single.notes[0]
    assert plan_frames(single, FitOptions(max_frames=None)).indices == [0]
    # two frames 1000 s apart: an impossible rate; the stated 25 fps is used
    sparse = timeline_from_probe(probe([0, 1000 * 90000], stated_fps=25.0))
    assert "0.001 fps" in sparse.notes[0] and "assuming a constant 25 fps (2 frames, 0.08 s)" in sparse.notes[0]
    assert len(plan_frames(sparse, FitOptions(max_frames=None)).indices) == 1
    # repeated timestamps: positions are used instead of times
    repeated = timeline_from_probe(probe([0, 3000, 3000, 6000], stated_fps=30.0))
    assert "share a timestamp" in repeated.notes[0] and not repeated.by_pts


def test_truncated_files_say_how_much_is_readable():
    damaged = timeline_from_probe(probe(np.arange(0, 40) * 3000, damage="the file is truncated", declared=3.0))
    assert damaged.notes == ("clip.mp4: the file is truncated; only the first 1.33 s (40 frames) are readable "
                             "and are translated.",)
    quiet = timeline_from_probe(probe(np.arange(0, 40) * 3000, declared=3.0))
    assert "declares 3.00 s but only the first 1.33 s (40 frames) are readable" in quiet.notes[0]
    assert timeline_from_probe(probe(np.arange(0, 90) * 3000, declared=3.02)).notes == ()


def test_files_without_presentation_times_are_matched_by_position():
    avi = timeline_from_probe(probe(np.arange(10), durations=np.ones(10), base=Fraction(1, 10), has_pts=False))
    assert not avi.by_pts and avi.average_fps == pytest.approx(10.0) and avi.end == pytest.approx(1.0)


def test_counts_beyond_what_a_run_can_hold_are_refused_before_decoding():
    day = Timeline(np.arange(0, 30 * 3600 * 24, 30.0), 30 * 3600 * 24 + 30.0)  # a frame every 30 s for a month
    with pytest.raises(InputError, match=rf"frames: this fit would translate [\d,]+ frames; expected at most "
                                         rf"{MAX_PLANNED_FRAMES:,}"):
        plan_frames(day, FitOptions(max_frames=None))
    assert len(plan_frames(day, FitOptions(max_frames=49)).indices) == 49


def test_start_frame_past_the_end_names_the_option():
    with pytest.raises(InputError, match=r"start_frame: 5 is past the end of the video \(5 frames\)"):
        plan_frames(constant_rate(5, 8.0), FitOptions(start_frame=5))
