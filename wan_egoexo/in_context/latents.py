"""Wan2.2 latents: the one place where they are normalised per channel, and video <-> normalised
latents through the VAE.

Normalised latents z_n = (z - mean) / std (the released per-channel statistics in the VAE config)
are what the transformer sees; raw latents z are what ComfyUI's LATENT holds. Videos are
[B, 3, F, H, W] in [-1, 1], F = 4k + 1 frames, H and W multiples of 32 (16x VAE compression times
the transformer's 2x2 patch).
"""

from __future__ import annotations

import operator

import torch

from ..errors import InputError
from ..finite_checks import check_decoded_video, require_finite

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 16
SIZE_MULTIPLE = 32  # 16x VAE compression x 2x2 transformer patch

# Values beyond this are not a [-1, 1] video (e.g. 0..255 pixels) rather than resampling overshoot.
_VIDEO_RANGE_LIMIT = 1.5


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a video: ((F-1)//4+1, H//16, W//16).

    Raises InputError unless F = 4k + 1 >= 1 and H, W are positive multiples of 32.
    """
    checked = []
    for name, value in (("frames", frames), ("height", height), ("width", width)):
        try:
            number = operator.index(value)  # ints, numpy and 0-d torch integers; not floats or bools
        except TypeError:
            number = None
        if number is None or isinstance(value, bool) or number < 1:
            raise InputError(f"{name}: {value!r} is not a positive whole number.")
        checked.append(number)
    frames, height, width = checked
    if (frames - 1) % TEMPORAL_COMPRESSION:
        raise InputError(f"frames: {frames} is not 4k+1; the Wan2.2 VAE needs 1, 5, 9, ... 49, ... frames "
                         f"(e.g. {frames - (frames - 1) % TEMPORAL_COMPRESSION}).")
    for name, value in (("height", height), ("width", width)):
        if value % SIZE_MULTIPLE:
            raise InputError(f"{name}: {value} is not a multiple of {SIZE_MULTIPLE} "
                             f"({SPATIAL_COMPRESSION}x VAE compression x 2x2 transformer patch).")
    return (frames - 1) // TEMPORAL_COMPRESSION + 1, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION


def latent_stats(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel latent mean and std of ``vae.config`` as float32 [1, C, 1, 1, 1] CPU tensors."""
    config = vae.config
    mean = torch.tensor(config.latents_mean, dtype=torch.float32)
    std = torch.tensor(config.latents_std, dtype=torch.float32)
    if mean.ndim != 1 or mean.shape != std.shape or mean.numel() != config.z_dim:
        raise InputError(f"vae: config has {mean.numel()} latents_mean and {std.numel()} latents_std values; "
                         f"expected one per latent channel ({config.z_dim}).")
    return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)


def _check_latents(name: str, z: torch.Tensor, vae) -> None:
    if z.ndim != 5 or z.shape[1] != vae.config.z_dim:
        raise InputError(f"{name}: shape {tuple(z.shape)} is not [B, {vae.config.z_dim}, F, h, w] latents of this VAE.")


def normalize_latents(z: torch.Tensor, vae) -> torch.Tensor:
    """(z - mean) / std per channel, computed in float32, returned in z's dtype and device."""
    _check_latents("latents", z, vae)
    mean, std = (s.to(z.device) for s in latent_stats(vae))
    return ((z.float() - mean) / std).to(z.dtype)


def denormalize_latents(z_n: torch.Tensor, vae) -> torch.Tensor:
    """z_n * std + mean per channel (the inverse of normalize_latents), in z_n's dtype and device."""
    _check_latents("latents", z_n, vae)
    mean, std = (s.to(z_n.device) for s in latent_stats(vae))
    return (z_n.float() * std + mean).to(z_n.dtype)


def _vae_device_dtype(vae) -> tuple[torch.device, torch.dtype]:
    param = next(vae.parameters())
    return param.device, param.dtype


@torch.no_grad()
def encode_video(vae, video: torch.Tensor, sample: bool = False,
                 generator: torch.Generator | None = None, interrupt=None) -> torch.Tensor:
    """Normalised float32 latents [B, C, (F-1)//4+1, H//16, W//16] of ``video`` [B, 3, F, H, W] in [-1, 1].

    Takes the mode (mean) of the VAE posterior unless ``sample`` is True, then draws from it with
    ``generator``. Runs in the VAE's own device and dtype; the result is on the VAE's device.
    ``interrupt``: a callable that raises to stop (a host's cancel check), called before each chunk the
    VAE's encoder runs (the Wan VAE encodes a few frames, or a tile, per call), so a long clip stops
    within one chunk.
    """
    posterior = _posterior(vae, video, interrupt)
    z = posterior.sample(generator=generator) if sample else posterior.mode()
    return normalize_latents(z.float(), vae)


@torch.no_grad()
def encode_posterior(vae, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of ``video`` [B, 3, F, H, W] in normalised units: float32 (mean_n, std_n) on the
    VAE's device, mean_n = (mean - m) / s and std_n = std / s per channel (m, s: the latent statistics),
    so mean_n + std_n * noise is a normalised posterior sample (what ``encode_video(sample=True)`` draws)."""
    posterior = _posterior(vae, video)
    _mean, std = (s.to(posterior.mean.device) for s in latent_stats(vae))
    return normalize_latents(posterior.mean.float(), vae), posterior.std.float() / std


def _posterior(vae, video: torch.Tensor, interrupt=None):
    if not torch.is_tensor(video) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
        raise InputError(f"video: shape {shape} is not [B, 3, F, H, W].")
    latent_shape(*video.shape[2:])
    if not video.is_floating_point():
        raise InputError(f"video: dtype {video.dtype} is not floating point; expected values in [-1, 1].")
    peak = video.abs().max().item()
    if peak > _VIDEO_RANGE_LIMIT:
        raise InputError(f"video: values reach {peak:.3g}; expected a video scaled to [-1, 1].")
    device, dtype = _vae_device_dtype(vae)
    encoder = getattr(vae, "encoder", None)
    if interrupt is None:
        return vae.encode(video.to(device=device, dtype=dtype)).latent_dist
    interrupt()
    hook = encoder.register_forward_pre_hook(lambda *_: interrupt()) if isinstance(encoder, torch.nn.Module) \
        else None
    try:
        return vae.encode(video.to(device=device, dtype=dtype)).latent_dist
    finally:
        if hook is not None:
            hook.remove()


@torch.no_grad()
def decode_latents(vae, latents_normalized: torch.Tensor) -> torch.Tensor:
    """Video [B, 3, F, H, W] float32 in [-1, 1] (clamped) from normalised latents [B, C, f, h, w],
    on the VAE's device (F = 4(f-1)+1, H = 16h, W = 16w)."""
    _check_latents("latents_normalized", latents_normalized, vae)
    require_finite(latents_normalized, "the latents to decode", "they came from a sampler run or LATENT input that "
                   "overflowed or was damaged")
    device, dtype = _vae_device_dtype(vae)
    z = denormalize_latents(latents_normalized.to(device=device, dtype=torch.float32), vae)
    video = vae.decode(z.to(dtype)).sample
    check_decoded_video(video)
    return video.float().clamp(-1.0, 1.0)
