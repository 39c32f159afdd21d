"""The automatic grid size keeps the input's aspect ratio as closely as the 32-pixel grid allows at about
the trained pixel count, checked against an exhaustive search, and the output comes back at the
input's own size."""

import math

import numpy as np
import pytest
import torch

from wan_egoexo.video.grid_size import TRAINED_PIXELS, automatic_size
from wan_egoexo.video.fit import FitOptions, fit_video, plan_boxes, unfit_video


def kept_fraction(source, target):
    """Share of the source's width and height a centre crop to ``target``'s aspect keeps."""
    (sw, sh), (tw, th) = source, target
    _, _, kw, kh = plan_boxes(sw, sh, tw, th, "crop")[0]
    return kw / sw, kh / sh


def exhaustive_best_aspect_error(source):
    """The smallest aspect error any grid size within 10% of the trained pixel count reaches."""
    sw, sh = source
    errors = [abs(math.log(w / h * sh / sw)) for w in range(32, 4097, 32) for h in range(32, 4097, 32)
              if 0.9 * TRAINED_PIXELS <= w * h <= 1.1 * TRAINED_PIXELS]
    return min(errors)


@pytest.mark.parametrize("source, expected", [((1920, 1080), (1248, 704)), ((1080, 1920), (704, 1248)),
                                               ((1440, 1080), (1120, 832)), ((321, 187), (1216, 704)),
                                               ((1280, 704), (1280, 704)), ((1000, 1000), (960, 960))])
def test_automatic_size_keeps_the_aspect_ratio(source, expected):
    width, height = automatic_size(*source)
    assert (width, height) == expected
    assert width % 32 == 0 and height % 32 == 0
    assert abs(width * height / TRAINED_PIXELS - 1) <= 0.10
    error = abs(math.log(width / height * source[1] / source[0]))
    # as close as the grid allows (aspect errors under 0.5% count as equal: a few pixels)
    assert error <= max(exhaustive_best_aspect_error(source), 0.005) + 1e-12
    kept_w, kept_h = kept_fraction(source, (width, height))
    assert min(kept_w, kept_h) > 0.99  # a 1920x1080 clip no longer loses 2.2% of its height
    if source == (1920, 1080):
        assert kept_fraction(source, (1280, 704))[1] < 0.979  # what the old fixed 1280x704 cost


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("source", [(96, 54), (54, 96), (72, 54), (107, 62)])
def test_output_is_written_at_the_input_size(source, mode):
    width, height = source
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, height, width, 3), dtype=np.uint8)
    grid = automatic_size(width, height)
    scale = 4  # the same rule at a small scale: sizes proportional to the automatic ones
    options = FitOptions(width=max(32, grid[0] // scale // 32 * 32), height=max(32, grid[1] // scale // 32 * 32),
                         mode=mode)
    video, info = fit_video(frames, 8.0, options)
    back = unfit_video(video, info)
    if mode == "crop" and min(kept_fraction(source, (options.width, options.height))) < 0.98:
        assert back.shape[1:3] == (info.crop_box[3], info.crop_box[2])  # a real crop cannot come back
    else:
        assert back.shape[1:3] == (height, width)


@pytest.mark.parametrize("source, grid", [((1920, 1080), (1248, 704)), ((1440, 1080), (1120, 832)),
                                          ((321, 187), (1216, 704))])
def test_automatic_size_crop_restores_the_exact_input_size(source, grid):
    frames = np.random.default_rng(1).integers(0, 255, (1, source[1], source[0], 3), dtype=np.uint8)
    info = fit_video(frames, 8.0, FitOptions(max_frames=1))[1]
    assert (info.width, info.height) == grid and info.output_size == source
    assert unfit_video(torch.zeros(3, 1, grid[1], grid[0]), info).shape == (1, source[1], source[0], 3)
    explicit = fit_video(frames, 8.0, FitOptions(width=1280, height=704, max_frames=1))[1]  # 1920x1080: 2.2% cut
    if source == (1920, 1080):
        assert explicit.output_size == (1920, 1056)  # a real crop returns the kept region
