"""Latent normalisation and video <-> latents through the (tiny) Wan2.2 VAE."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.latents import (decode_latents, denormalize_latents, encode_video, latent_shape, latent_stats,
                                normalize_latents)
from wan_egoexo.tiny.vae import build_tiny_vae


@pytest.fixture(scope="module")
def vae():
    return build_tiny_vae(seed=2)


@pytest.fixture(scope="module")
def video():
    generator = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, 5, 32, 64, generator=generator) * 2 - 1


def per_channel(z, fn, vae):
    """Reference: apply fn(channel, mean_c, std_c) one channel at a time from the config lists."""
    out = torch.empty_like(z)
    for c, (m, s) in enumerate(zip(vae.config.latents_mean, vae.config.latents_std)):
        out[:, c] = fn(z[:, c], m, s)
    return out


def test_latent_stats_are_the_config_values(vae):
    mean, std = latent_stats(vae)
    assert mean.shape == std.shape == (1, 48, 1, 1, 1)
    assert mean.flatten().tolist() == pytest.approx(vae.config.latents_mean)
    assert std.flatten().tolist() == pytest.approx(vae.config.latents_std)


def test_normalize_matches_per_channel_formula_and_round_trips(vae):
    z = torch.randn(2, 48, 3, 2, 4, generator=torch.Generator().manual_seed(1))
    z_n = normalize_latents(z, vae)
    torch.testing.assert_close(z_n, per_channel(z, lambda x, m, s: (x - m) / s, vae))
    torch.testing.assert_close(denormalize_latents(z_n, vae), z)
    torch.testing.assert_close(denormalize_latents(z, vae), per_channel(z, lambda x, m, s: x * s + m, vae))
    assert normalize_latents(z.bfloat16(), vae).dtype == torch.bfloat16


def test_normalize_rejects_latents_of_another_width(vae):
    with pytest.raises(InputError, match=r"\[B, 48, F, h, w\]"):
        normalize_latents(torch.zeros(1, 16, 1, 2, 2), vae)


def test_encode_video_is_the_normalised_posterior_mode(vae, video):
    latents = encode_video(vae, video)
    assert latents.dtype == torch.float32 and latents.shape == (1, 48, 2, 2, 4)
    with torch.no_grad():
        mode = vae.encode(video).latent_dist.mode()
    torch.testing.assert_close(latents, per_channel(mode, lambda x, m, s: (x - m) / s, vae))


def test_encode_video_sample_draws_with_the_generator(vae, video):
    first = encode_video(vae, video, sample=True, generator=torch.Generator().manual_seed(7))
    again = encode_video(vae, video, sample=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    with torch.no_grad():
        posterior = vae.encode(video).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    expected = per_channel(posterior.mean + posterior.std * noise, lambda x, m, s: (x - m) / s, vae)
    torch.testing.assert_close(first, expected)
    assert not torch.allclose(first, encode_video(vae, video))


def test_decode_latents_denormalises_and_clamps(vae, video):
    latents = encode_video(vae, video) * 3.0  # push the decoder out of range so clamping matters
    decoded = decode_latents(vae, latents)
    assert decoded.dtype == torch.float32 and decoded.shape == video.shape
    with torch.no_grad():
        raw = per_channel(latents, lambda x, m, s: x * s + m, vae)
        expected = vae.decode(raw).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, expected)
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_encode_video_in_bf16_vae_returns_float32(video):
    vae = build_tiny_vae(seed=2).to(torch.bfloat16)
    latents = encode_video(vae, video)
    assert latents.dtype == torch.float32 and latents.shape == (1, 48, 2, 2, 4)
    assert decode_latents(vae, latents).dtype == torch.float32


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 4, 32, 32), "frames: 4 is not 4k\\+1"),
    ((1, 3, 5, 48, 32), "height: 48 is not a multiple of 32"),
    ((1, 3, 5, 32, 40), "width: 40 is not a multiple of 32"),
    ((1, 4, 5, 32, 32), r"shape \(1, 4, 5, 32, 32\) is not \[B, 3, F, H, W\]"),
    ((3, 5, 32, 32), r"is not \[B, 3, F, H, W\]"),
])
def test_encode_video_rejects_bad_shapes(vae, shape, message):
    with pytest.raises(InputError, match=message):
        encode_video(vae, torch.zeros(shape))


def test_encode_video_rejects_pixel_range_video(vae):
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        encode_video(vae, torch.full((1, 3, 1, 32, 32), 255.0))


def test_latent_shape():
    assert latent_shape(49, 704, 1280) == (13, 44, 80)
    assert latent_shape(1, 32, 32) == (1, 2, 2)
    for args in [(0, 32, 32), (48, 32, 32), (5, 33, 32), (5, 32, 16), (5.0, 32, 32)]:
        with pytest.raises(InputError):
            latent_shape(*args)
