"""A tiny random Wan2.2 VAE (the real structure: 48 latent channels, 2x2 patchified RGB, residual
blocks, 16x spatial and 4x temporal compression, at widths a CPU runs in milliseconds), and writing
any diffusers AutoencoderKLWan back to the original single-file layout of wan2.2_vae.safetensors."""

from __future__ import annotations

import os

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

from ..errors import InputError
from ..models.vae_keys import diffusers_to_original
from ..models.vae_loader import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD


def tiny_vae_config() -> dict:
    """AutoencoderKLWan arguments of the tiny VAE. The decoder width differs from the encoder's (as in
    the real 160 / 256) so that a loader mixing the two up cannot pass."""
    return dict(
        base_dim=16,
        decoder_base_dim=24,
        z_dim=48,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        latents_mean=list(WAN22_LATENTS_MEAN),
        latents_std=list(WAN22_LATENTS_STD),
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
    )


def build_tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """A tiny random Wan2.2 VAE in eval mode. Every weight, the all-ones norm scales included, is
    perturbed, so a weight loaded into the wrong place changes the outputs. The global RNG is left
    as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**tiny_vae_config())
        with torch.no_grad():
            for param in vae.parameters():
                param.add_(torch.randn_like(param) * 0.05)
    return vae.eval()


def save_vae_single_file(vae: AutoencoderKLWan, path: str | os.PathLike) -> None:
    """Write a diffusers AutoencoderKLWan in the original Wan2.2 VAE layout (wan2.2_vae.safetensors)."""
    state = vae.state_dict()
    mapping, unknown = diffusers_to_original(state, vae.config.num_res_blocks)
    if unknown:
        raise InputError(f"vae: {len(unknown)} weights have no name in the Wan2.2 single-file layout "
                         f"({', '.join(unknown[:4])}); expected a Wan2.2 (is_residual) AutoencoderKLWan.")
    tensors = {mapping[key]: tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}
    save_file(tensors, str(path))
