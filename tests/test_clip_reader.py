"""Reading only the frames a fit uses from real files: the right frames by their timestamps, upright,
resized as read, and no more decoded than needed; frame folders; hostile sizes refused before decoding."""

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from media_tools import FFMPEG, constant_times, decoded_frames, frame_index, make_clip
from wan_egoexo.video.clip_reader import read_fitted_clip
from wan_egoexo.video.clip_source import open_clip
from wan_egoexo.errors import InputError
from wan_egoexo.video.decode import decode_frames
from wan_egoexo.video.fit import FitOptions, fit_video
from wan_egoexo.video.read_write import read_video

VFR_TIMES = constant_times(24, 30.0) + [0.8 + k * 0.125 + (0.02 if k % 2 else 0.0) for k in range(25)]
DROPPED_TIMES = [i / 30 for i in range(90) if i % 5 != 4]


def shown(video: torch.Tensor) -> list[int]:
    """The source frame each fitted frame shows (from its grey level)."""
    frames = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    return [frame_index(frame) for frame in frames]


def nearest_by_time(times, fps, count):
    return [int(np.argmin(np.abs(np.asarray(times) - k / fps) - 1e-9 * np.arange(len(times)))) for k in range(count)]


@pytest.mark.parametrize("times", [VFR_TIMES, DROPPED_TIMES], ids=["variable_rate", "dropped_frames"])
def test_frames_are_picked_by_their_timestamps(tmp_path, times):
    path = make_clip(tmp_path / "clip.mp4", times)
    clip = read_fitted_clip(path, FitOptions(width=32, height=32, mode="stretch", max_frames=None))
    duration = times[-1] + (times[-1] - times[-2]) - times[0]
    count = round(duration * 8)
    assert clip.info.real_frames == count and clip.notes == []
    expected = [i % 48 for i in nearest_by_time(times, 8.0, count)]
    assert shown(clip.video)[:count] == expected
    # the old reader spaced frames by the average rate: it would have shown other frames
    average = len(times) / duration
    assert [i % 48 for i in nearest_by_time(np.arange(len(times)) / average, 8.0, count)] != expected


def test_only_the_frames_used_are_decoded(tmp_path):
    path = make_clip(tmp_path / "long.mp4", constant_times(300, 30.0))
    source = open_clip(path)
    assert source.timeline.num_frames == 300
    wanted = [0, 4, 8, 11, 15, 19, 22, 26, 30]  # 9 frames at 8 fps
    found, decoded = decode_frames(source.probe, source.timeline, wanted, (0, 0, 64, 48), (32, 24))
    assert sorted(found) == wanted and all(frame.shape == (24, 32, 3) for frame in found.values())
    assert decoded <= 31 + 4  # up to the last frame wanted (and a B-frame or so), not the 300 of the file
    assert [frame_index(found[i]) for i in wanted] == [i % 48 for i in wanted]


def test_streamed_fit_matches_fitting_the_whole_decoded_clip(tmp_path):
    path = make_clip(tmp_path / "clip.mp4", constant_times(30, 24.0), width=96, height=64)
    options = FitOptions(width=64, height=32, max_frames=9, fps=8.0, mode="crop")
    clip = read_fitted_clip(path, options)
    whole = read_video(path)
    expected, info = fit_video(whole.frames, whole.fps, options)
    assert clip.info.source_indices == info.source_indices == [3 * k for k in range(9)]
    assert (clip.info.crop_box, clip.info.content_box) == (info.crop_box, info.content_box)
    assert (clip.video - expected).abs().mean() < 0.01  # ffmpeg's resize vs torch's: the same picture


def test_rotated_phone_clips_come_out_upright(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", constant_times(6, 8.0), width=64, height=32)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(rotated)], check=True)
    source = open_clip(rotated)
    assert (source.width, source.height) == (32, 64)
    clip = read_fitted_clip(source, FitOptions(width=32, height=64, mode="stretch", max_frames=None))
    frames = ((clip.video.permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()[: clip.info.real_frames]
    upright = decoded_frames(rotated)  # ffmpeg's own reading of the rotation
    assert np.abs(frames.astype(int) - upright.astype(int)).mean() < 2
    # 90 degrees counter-clockwise: the marker of the top-left corner is now at the bottom left
    assert frames[0, -8:, :4].mean() > 200 and frames[0, :8, :4].mean() < 100


def test_truncated_file_is_translated_as_far_as_it_is_readable(tmp_path):
    path = make_clip(tmp_path / "whole.mp4", constant_times(40, 8.0), width=96, height=64,
                     extra=["-crf", "0", "-movflags", "+faststart"])  # the index first, as phones and editors write
    truncated = tmp_path / "cut.mp4"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    clip = read_fitted_clip(truncated, FitOptions(width=32, height=32, max_frames=None))
    assert 3 < clip.info.real_frames < 40
    assert "cut.mp4" in clip.notes[0] and "readable" in clip.notes[0]


def test_frame_folder_with_a_stray_file_and_its_own_rate(tmp_path):
    for i in range(12):
        Image.fromarray(np.full((24, 32, 3), 10 + 5 * i, np.uint8)).save(tmp_path / f"frame_{i:03d}.png")
    (tmp_path / "notes.txt").write_text("shot on a tripod")
    (tmp_path / "Thumbs.db").write_bytes(b"\0" * 16)
    clip = read_fitted_clip(tmp_path, FitOptions(width=32, height=32, mode="stretch", max_frames=None),
                            input_fps=24.0)
    assert clip.info.source_indices == [0, 3, 6, 9] and clip.info.source_fps == 24.0
    assert shown(clip.video)[:4] == [0, 3, 6, 9]
    Image.new("RGB", (33, 24)).save(tmp_path / "frame_006.png")
    with pytest.raises(InputError, match=r"frame_006\.png: frame is 33x24 but frame_000\.png is 32x24"):
        read_fitted_clip(tmp_path, FitOptions(width=32, height=32, max_frames=None), input_fps=24.0)


def test_oversized_frames_are_refused_from_their_header(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (16000, 16000)).save(huge)  # a few KB on disk, 768 MB as RGB
    assert huge.stat().st_size < 200_000
    with pytest.raises(InputError, match=r"huge\.png: frames of (16000x16000 \()?256 Mpx\)? are larger than the 67 Mpx"):
        open_clip(huge)
    large = tmp_path / "large.png"
    Image.new("1", (9000, 9000)).save(large)  # under PIL's own limit, over ours
    with pytest.raises(InputError, match=r"large\.png: frames of 9000x9000 \(81 Mpx\) are larger than the 67 Mpx"):
        open_clip(large)


def test_memory_benchmark_long_clips_cost_what_short_ones_do(tmp_path, capsys):
    """benchmarks/bench_clip_memory.py in its fast setting: 9 frames of a 6 s clip peak about as high as 9 frames
    of a 1 s clip (the benchmark prints the ratio; only a generous bound is asserted here)."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_clip_memory.py"
    spec = importlib.util.spec_from_file_location("bench_clip_memory", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "memory.json"
    assert bench.main(["--fast", "--json", str(out)]) == 0
    ratio = json.loads(out.read_text())["ratios"]["this checkout"]
    assert ratio < 1.6
    assert "ratio 6 s / 1 s" in capsys.readouterr().out
