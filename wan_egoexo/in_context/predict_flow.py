"""The in-context forward: one call gives the flow prediction for the target part.

The parts (reference, source, target latents) are concatenated along the latent frame axis
and run through diffusers' own ``WanTransformer3DModel.forward``, with two WorldWander changes:
per-token timesteps (0 on the clean source/reference tokens, t on the target) and the rotary
tables re-indexed by the collaborative positions. The re-indexing is a forward hook on the
model's ``rope`` module, so everything else (attention backends, LoRA adapters, gradient
checkpointing, caching hooks) is diffusers' unchanged code. The output is cut to the target frames.
"""

from __future__ import annotations

import contextlib
import numbers

import torch

from ..errors import InputError
from ..memory.offload import execution_device
from .layout import InContextLayout
from .positions import rotary_tables

MAX_TEXT_TOKENS = 512


@contextlib.contextmanager
def rotary_override(transformer, frame_index: torch.Tensor, height_tokens: int, width_tokens: int):
    """Make ``transformer.rope`` return the tables for ``frame_index`` for the duration of the block;
    always undone. The tables are built inside the hook, from the rope's buffers where the forward
    runs (block offloading may keep them elsewhere until then)."""

    def replace_output(module, _inputs, output):
        cos, sin = rotary_tables(module, frame_index, height_tokens, width_tokens)
        return cos.to(output[0].device), sin.to(output[0].device)

    handle = transformer.rope.register_forward_hook(replace_output)
    try:
        yield
    finally:
        handle.remove()


def _check_latent(name: str, tensor, channels: int, patch) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputError(f"{name}: expected a latent tensor [B, {channels}, F, h, w], got {shape}.")
    if tensor.shape[1] != channels:
        raise InputError(f"{name}: has {tensor.shape[1]} channels; this transformer expects {channels} "
                         f"(Wan2.2 VAE latents), shape {tuple(tensor.shape)}.")
    if tensor.shape[3] % patch[1] or tensor.shape[4] % patch[2]:
        raise InputError(f"{name}: latent height and width {tuple(tensor.shape[3:])} must be multiples of the "
                         f"patch size {tuple(patch[1:])}.")


def _target_timesteps(timestep, batch: int, device) -> torch.Tensor:
    if isinstance(timestep, numbers.Number):
        return torch.full((batch,), float(timestep), device=device)
    if isinstance(timestep, torch.Tensor):
        if timestep.ndim == 0:
            return timestep.float().expand(batch).to(device)
        if timestep.shape == (batch,):
            return timestep.float().to(device)
    shape = tuple(timestep.shape) if isinstance(timestep, torch.Tensor) else type(timestep).__name__
    raise InputError(f"timestep: expected a number or a tensor of shape [{batch}], got {shape}.")


def predict_flow(transformer, target, timestep, text_embeds, source, reference=None, positions="collaborative"):
    """Flow prediction (velocity noise - x0) for the target latents, given clean source (and reference) latents.

    transformer: a diffusers ``WanTransformer3DModel`` (LoRA adapters allowed).
    target, source: normalised latents [B, 48, F, h, w] of equal shape.
    reference: [B, 48, 1, h, w] (ego->exo layout) or None (exo->ego layout).
    timestep: the target's timestep on the 0..1000 scale, a number or a [B] tensor.
    text_embeds: [B, L, text_dim] with L <= 512.
    positions: "collaborative" (the released models) or "uniform" (the ablation).
    Returns a tensor shaped like ``target``, in target's dtype.
    """
    config = transformer.config
    patch = tuple(config.patch_size)
    _check_latent("target", target, config.in_channels, patch)
    _check_latent("source", source, config.in_channels, patch)
    if source.shape != target.shape:
        raise InputError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same shape.")
    batch, _, frames, height, width = target.shape
    if reference is not None:
        _check_latent("reference", reference, config.in_channels, patch)
        if reference.shape != (batch, target.shape[1], 1, height, width):
            raise InputError(f"reference: expected shape {(batch, target.shape[1], 1, height, width)} (one latent "
                             f"frame at the video's size), got {tuple(reference.shape)}.")
    if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] != batch \
            or text_embeds.shape[2] != config.text_dim or not 1 <= text_embeds.shape[1] <= MAX_TEXT_TOKENS:
        shape = tuple(text_embeds.shape) if isinstance(text_embeds, torch.Tensor) else type(text_embeds).__name__
        raise InputError(f"text_embeds: expected [{batch}, L, {config.text_dim}] with 1 <= L <= {MAX_TEXT_TOKENS}, "
                         f"got {shape}.")
    if frames % patch[0]:
        raise InputError(f"target: {frames} latent frames is not a multiple of the temporal patch {patch[0]}.")

    dtype = transformer.patch_embedding.weight.dtype  # never fp8: layerwise casting skips the patch embedding
    device = execution_device(transformer)
    parts = ([reference] if reference is not None else []) + [source, target]
    hidden = torch.cat([part.to(device=device, dtype=dtype) for part in parts], dim=2)

    grid_t, grid_h, grid_w = frames // patch[0], height // patch[1], width // patch[2]
    layout = InContextLayout(grid_t, reference is not None, positions)
    per_token = layout.per_token_timesteps(_target_timesteps(timestep, batch, device), grid_h * grid_w)

    index = layout.frame_index()
    if max(int(index.max()) + 1, grid_h, grid_w) > transformer.rope.max_seq_len:
        rotary_tables(transformer.rope, index, grid_h, grid_w)  # raises the named error before the forward
    with rotary_override(transformer, index, grid_h, grid_w):
        out = transformer(
            hidden_states=hidden,
            timestep=per_token,
            encoder_hidden_states=text_embeds.to(device=device, dtype=dtype),
            return_dict=False,
        )[0]
    return out[:, :, -frames:].to(target.dtype)
