"""Fitting clips to the model grid and back: frame choice, 4k+1 padding, crop/pad/stretch geometry."""

import json

import numpy as np
import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.video.fit import (FitInfo, FitOptions, choose_target_size, fit_video, letterbox_image,
                                  resize_image, select_frame_indices, summarize, unfit_video)


def smooth_clip(frames, height, width, seed=0):
    """Low-frequency colour fields that drift per frame: resizing them loses little."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    clip = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        for c in range(3):
            a, b, phase = rng.uniform(0.5, 2.0, 3)
            field = 0.5 + 0.4 * np.sin(2 * a * xs + 3 * b * ys + phase + 0.2 * i)
            clip[i, :, :, c] = np.round(field * 255)
    return clip


def numbered_clip(frames, height=8, width=8):
    """Every pixel of frame i holds i, so the fitted frames reveal which source frame they show."""
    return np.broadcast_to(np.arange(frames, dtype=np.uint8)[:, None, None, None], (frames, height, width, 3)).copy()


def nearest_source_frames(num_frames, source_fps, target_fps, start, limit):
    """Independent reference: for each output time k / target_fps, the source frame whose time is closest
    (ties to the later one), while the output frame's middle, (k + 1/2) / target_fps, is still within the
    clip (which ends one source period after its last frame), and at least one frame."""
    times = (np.arange(start, num_frames) - start) / source_fps
    end = times[-1] + 1 / source_fps
    chosen = []
    k = 0
    while len(chosen) < limit and ((k + 0.5) / target_fps <= end + 1e-9 or k == 0):
        distance = np.round(np.abs(times - k / target_fps), 9)
        best = np.flatnonzero(distance == distance.min())[-1]
        chosen.append(start + int(best))
        k += 1
    return chosen


@pytest.mark.parametrize("num_frames, source_fps, target_fps, start", [
    (300, 30.0, 8.0, 0), (100, 25.0, 8.0, 5), (30, 24.0, 8.0, 0), (40, 29.97, 8.0, 3),
    (10, 6.0, 8.0, 0), (12, 12.0, 8.0, 1), (7, 8.0, 8.0, 0)])
def test_fps_resampling_picks_nearest_source_frames(num_frames, source_fps, target_fps, start):
    options = FitOptions(fps=target_fps, start_frame=start)
    indices, fitted_fps = select_frame_indices(num_frames, source_fps, options)
    assert indices == nearest_source_frames(num_frames, source_fps, target_fps, start, 49)
    assert fitted_fps == target_fps


def test_fitted_frames_show_the_selected_source_frames():
    clip = numbered_clip(40)
    video, info = fit_video(clip, 25.0, FitOptions(width=32, height=32, mode="stretch"))
    assert info.source_indices == nearest_source_frames(40, 25.0, 8.0, 0, 49)
    shown = torch.round((video[0, :, 0, 0] + 1) * 127.5).long().tolist()
    real = info.real_frames
    assert shown[:real] == info.source_indices
    assert shown[real:] == [info.source_indices[-1]] * info.padded_frames


def test_frame_stride_and_source_rate():
    options = FitOptions(fps=None, frame_stride=3, start_frame=2, max_frames=9)
    assert select_frame_indices(100, 30.0, options) == (list(range(2, 29, 3)), 10.0)
    every_frame = FitOptions(fps=None)
    assert select_frame_indices(6, 24.0, every_frame) == ([0, 1, 2, 3, 4, 5], 24.0)


@pytest.mark.parametrize("frames, fps, real, total", [
    (1, 24.0, 1, 1),        # a single frame
    (20, 24.0, 7, 9),       # short: fewer than 49 at 8 fps -> padded to 4k+1
    (300, 30.0, 49, 49),    # long: capped at max_frames
    (17, 8.0, 17, 17),      # already 4k+1
])
def test_frame_counts_are_4k_plus_1_and_padding_repeats_last_frame(frames, fps, real, total):
    clip = smooth_clip(frames, 24, 32)
    video, info = fit_video(clip, fps, FitOptions(width=32, height=32, mode="stretch"))
    assert video.shape == (3, total, 32, 32)
    assert (info.real_frames, info.padded_frames, info.num_frames) == (real, total - real, total)
    assert len(info.source_indices) == real
    for extra in range(real, total):
        assert torch.equal(video[:, extra], video[:, real - 1])
    back = unfit_video(video, info)
    assert back.shape == (real, 24, 32, 3)
    assert info.output_fps == 8.0


SHAPES = {"landscape": (48, 64), "portrait": (64, 48), "square": (40, 40), "odd": (33, 45)}
TARGETS = {"landscape": (64, 32), "portrait": (32, 64), "square": (32, 32), "odd": (64, 32)}


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fit_unfit_round_trip_sizes(shape, mode):
    height, width = SHAPES[shape]
    target_w, target_h = TARGETS[shape]
    clip = smooth_clip(11, height, width)
    video, info = fit_video(clip, 16.0, FitOptions(width=target_w, height=target_h, mode=mode))
    assert video.shape == (3, info.num_frames, target_h, target_w) and (info.num_frames - 1) % 4 == 0
    assert video.dtype == torch.float32 and video.min() >= -1 and video.max() <= 1
    back = unfit_video(video, info)
    if mode == "crop":
        x, y, w, h = info.crop_box
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        assert (w == width) or (h == height)  # a centre crop keeps one full side
        assert w / h == pytest.approx(target_w / target_h, rel=0.05)
        assert back.shape == (info.real_frames, h, w, 3)
        reference = clip[info.source_indices][:, y:y + h, x:x + w]
    else:
        assert back.shape == (info.real_frames, height, width, 3)
        reference = clip[info.source_indices]
    assert np.abs(back.astype(int) - reference.astype(int)).mean() < 6
    restored = FitInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert restored == info


def test_pad_round_trip_is_exact_without_scaling_and_close_with_it():
    clip = smooth_clip(5, 48, 64)
    video, info = fit_video(clip, 8.0, FitOptions(width=64, height=64, mode="pad"))
    assert info.content_box == (0, 8, 64, 48)
    assert torch.all(video[:, :, :8] == -1) and torch.all(video[:, :, 56:] == -1)
    np.testing.assert_array_equal(unfit_video(video, info), clip)

    small = smooth_clip(5, 24, 32, seed=1)
    video, info = fit_video(small, 8.0, FitOptions(width=96, height=96, mode="pad"))
    assert info.content_box == (0, 12, 96, 72)
    back = unfit_video(video, info)
    assert back.shape == small.shape
    assert np.abs(back.astype(int) - small.astype(int)).mean() < 1.5


def test_crop_without_resizing_is_the_centre_slice():
    clip = smooth_clip(5, 64, 96)
    video, info = fit_video(clip, 8.0, FitOptions(width=64, height=64, mode="crop"))
    assert info.crop_box == (16, 0, 64, 64)
    expected = torch.from_numpy(clip[:, :, 16:80]).float().permute(3, 0, 1, 2) / 127.5 - 1
    torch.testing.assert_close(video, expected)


def test_unfit_accepts_channels_last_frames():
    clip = smooth_clip(9, 48, 64)
    video, info = fit_video(clip, 8.0, FitOptions(width=64, height=32, mode="pad"))
    from_model = unfit_video(video, info)
    as_image = ((video + 1) / 2).permute(1, 2, 3, 0)  # ComfyUI IMAGE layout, 0..1
    np.testing.assert_array_equal(unfit_video(as_image, info), from_model)
    as_uint8 = torch.round((video + 1) * 127.5).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    # Quantised before the resize back, so within one level.
    np.testing.assert_allclose(unfit_video(as_uint8, info), from_model, atol=1)
    with pytest.raises(InputError, match=r"video: shape .*64x32"):
        unfit_video(video[:, :, :16], info)
    with pytest.raises(InputError, match="real frames"):
        unfit_video(video[:, :3], info)


def test_float_input_matches_uint8_input():
    clip = smooth_clip(5, 24, 32)
    from_uint8, _ = fit_video(clip, 8.0, FitOptions(width=64, height=32))
    from_float, _ = fit_video(torch.from_numpy(clip).float() / 255, 8.0, FitOptions(width=64, height=32))
    torch.testing.assert_close(from_float, from_uint8, atol=1e-5, rtol=0)


def test_automatic_size_follows_orientation():
    auto = FitOptions()
    assert choose_target_size(1280, 704, auto) == (1280, 704)  # the trained size stays as it is
    assert choose_target_size(1920, 1080, auto) == (1248, 704)
    assert choose_target_size(1080, 1920, auto) == (704, 1248)
    assert choose_target_size(500, 500, auto) == (960, 960)
    assert choose_target_size(1920, 1080, FitOptions(width=640)) == (640, 352)
    assert choose_target_size(1080, 1920, FitOptions(height=640)) == (352, 640)
    video, info = fit_video(smooth_clip(1, 48, 64), 8.0)  # 4:3
    assert video.shape == (3, 1, 832, 1120) and info.mode == "crop"


def test_option_errors_name_the_option():
    with pytest.raises(InputError, match=r"width: 1000.*992 or 1024"):
        FitOptions(width=1000)
    with pytest.raises(InputError, match=r"height: 700.*672 or 704"):
        FitOptions(height=700)
    with pytest.raises(InputError, match=r"max_frames: 48.*45 or 49"):
        FitOptions(max_frames=48)
    with pytest.raises(InputError, match=r"fps.*frame_stride.*mutually exclusive"):
        FitOptions(fps=8.0, frame_stride=2)
    with pytest.raises(InputError, match="frame_stride: 0"):
        FitOptions(fps=None, frame_stride=0)
    with pytest.raises(InputError, match="mode: 'zoom'"):
        FitOptions(mode="zoom")
    with pytest.raises(InputError, match=r"start_frame: 30 .*30 frames"):
        fit_video(smooth_clip(30, 8, 8), 24.0, FitOptions(start_frame=30, width=32, height=32))
    with pytest.raises(InputError, match="fps: 0"):
        fit_video(smooth_clip(3, 8, 8), 0, FitOptions(width=32, height=32))
    with pytest.raises(InputError, match=r"frames: shape"):
        fit_video(np.zeros((8, 8, 3), np.uint8), 8.0)
    with pytest.raises(InputError, match="missing"):
        FitInfo.from_dict({"mode": "crop"})


def test_letterbox_and_resize_image():
    image = smooth_clip(1, 32, 64)[0]
    boxed = letterbox_image(image, 64, 64)
    assert boxed.shape == (3, 1, 64, 64)
    assert torch.all(boxed[:, :, :16] == -1) and torch.all(boxed[:, :, 48:] == -1)
    expected = torch.from_numpy(image).float().permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(boxed[:, 0, 16:48], expected)
    cropped = resize_image(image, 32, 32, mode="crop")
    torch.testing.assert_close(cropped[:, 0], expected[:, :, 16:48])
    stretched = resize_image(image, 64, 16, mode="stretch")
    assert stretched.shape == (3, 1, 16, 64) and stretched.min() >= -1 and stretched.max() <= 1


def test_summary_line():
    info = FitInfo(mode="crop", source_width=1920, source_height=1080, source_frames=300, source_fps=30.0,
                   width=1280, height=704, fitted_fps=8.0, source_indices=list(range(0, 181, 4)) + [180] * 3,
                   real_frames=49, padded_frames=0, crop_box=(0, 0, 1920, 1080), content_box=(0, 0, 1280, 704))
    assert summarize(info) == "1920x1080 30fps 300 frames -> 1280x704 8fps 49 frames (crop), frames 0..180 used"
    clip = smooth_clip(20, 24, 32)
    _, short = fit_video(clip, 24.0, FitOptions(width=32, height=32))
    assert summarize(short).endswith(
        f"9 frames (crop), frames 0..{short.source_indices[-1]} used, last frame repeated 2x")
