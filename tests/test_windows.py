"""Sliding windows: coverage, weights summing to one, exactness for one window, batching."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target
from wan_egoexo.in_context.windows import WindowOptions, blend_weights, window_starts, windowed_flow


@pytest.mark.parametrize("frames", [1, 2, 13, 14, 25, 50, 51])
@pytest.mark.parametrize("length, overlap", [(13, 4), (13, 0), (5, 4), (3, 1)])
@pytest.mark.parametrize("ramp", ["linear", "cosine"])
def test_windows_cover_clip_and_weights_sum_to_one(frames, length, overlap, ramp):
    starts = window_starts(frames, length, overlap)
    span = min(length, frames)
    assert starts[0] == 0 and starts[-1] + span == frames  # last window ends at the clip's end
    assert starts == sorted(set(starts))
    weights = blend_weights(frames, starts, length, ramp)
    total = torch.zeros(frames, dtype=torch.float64)
    for k, s in enumerate(starts):
        total[s:s + span] += weights[k]
    torch.testing.assert_close(total, torch.ones(frames, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (weights > 0).all()


def test_overlap_fades_between_windows():
    weights = blend_weights(12, [0, 5], 7, "linear")  # overlap of 2 frames: 5, 6
    assert weights[0, :5].tolist() == [1.0] * 5 and weights[1, 2:].tolist() == [1.0] * 5
    assert weights[0, 5] > weights[0, 6] and weights[1, 0] < weights[1, 1]


@pytest.mark.parametrize("batch", [1, 3])
def test_frame_local_flow_is_reproduced_exactly(batch):
    """A flow that depends only on each frame's own values must come out unchanged by the blending."""
    g = torch.Generator().manual_seed(0)
    latents, source = torch.randn(2, 2, 4, 23, 2, 2, generator=g)
    options = WindowOptions(length=7, overlap=3, batch=batch)
    calls = []

    def flow_fn(lat, src):
        calls.append(lat.shape[0])
        return 2 * src - lat

    out = windowed_flow(flow_fn, latents, source, options)
    torch.testing.assert_close(out, 2 * source - latents, rtol=0, atol=1e-6)
    assert max(calls) == 2 * min(batch, len(window_starts(23, 7, 3)))


@torch.no_grad()
def test_one_window_equals_plain_sampler_bit_for_bit(tiny_transformer):
    g = torch.Generator().manual_seed(4)
    source = torch.randn(1, 48, 3, 4, 4, generator=g)
    cond, uncond = torch.randn(1, 6, 32, generator=g), torch.zeros(1, 6, 32)
    settings = SamplingSettings(steps=3, seed=2)
    plain = sample_target(tiny_transformer, source, cond, uncond, settings=settings)
    for length in (3, 13):
        windowed = sample_target(tiny_transformer, source, cond, uncond, settings=settings,
                                 windows=WindowOptions(length=length, overlap=1))
        assert torch.equal(plain, windowed)


@torch.no_grad()
def test_long_clip_batched_windows_match_one_at_a_time(tiny_transformer):
    g = torch.Generator().manual_seed(5)
    source = torch.randn(1, 48, 7, 4, 4, generator=g)
    ref = torch.randn(1, 48, 1, 4, 4, generator=g)
    cond, uncond = torch.randn(1, 6, 32, generator=g), torch.zeros(1, 6, 32)
    settings = SamplingSettings(steps=2, seed=3)
    one = sample_target(tiny_transformer, source, cond, uncond, reference=ref, settings=settings,
                        windows=WindowOptions(length=3, overlap=1, batch=1))
    many = sample_target(tiny_transformer, source, cond, uncond, reference=ref, settings=settings,
                         windows=WindowOptions(length=3, overlap=1, batch=3))
    assert one.shape == source.shape and torch.isfinite(one).all()
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (WindowOptions(length=0), "length"), (WindowOptions(length=4, overlap=4), "overlap"),
    (WindowOptions(ramp="step"), "ramp"), (WindowOptions(batch=0), "batch"),
])
def test_bad_window_options_are_named(options, message):
    with pytest.raises(InputError, match=message):
        options.validate()
