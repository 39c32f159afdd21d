"""Compact timestep modulation: the per-token timesteps of the in-context forward are constant over
whole latent frames (0 on the source/reference frames, t on the target frames), so the timestep
embedding and the six modulation vectors are computed once per group of equal-timestep tokens and
broadcast over the group, in the model's dtype.

Default diffusers, with ``timestep`` of shape [B, N], embeds every token: the condition embedder
keeps ``timestep_proj`` [B, N, 6, dim] for the whole forward, and every block materialises
``scale_shift_table + temb.float()`` as a new [B, N, 6, dim] float32 tensor, then float32 copies of
the activations around each modulated norm and residual. At 704x1280x49 that is 1.7 GB of float32
per batch element per block call. Here:

- a diffusers hook on ``transformer.condition_embedder`` runs the embedder's own forward on the
  distinct timesteps only and returns ``timestep_proj`` as [B, K, 6 * dim]: one row per group of
  G tokens, G the largest size that divides every run of equal timesteps (a whole part for
  exo -> ego, where K = 2; one latent frame for ego -> exo, whose reference frame makes the runs
  F + 1 and F frames long);
- a hook on every ``WanTransformerBlock`` runs the block with the modulation broadcast over the
  [B, K, G, dim] view of the activations. The six vectors stay float32 ([B, K, dim], tiny); the
  norms and the gated residuals are single fused kernels (``torch.addcmul``) that compute in
  float32 and write the model's dtype, so no float32 tensor of the activations' size exists.

How close, in bf16: on a real-width block (2 x 672 tokens) diffusers' own bf16 forward differs
from the float32 forward of the same weights by a relative L2 of 4.41e-3, this one by 4.46e-3 (the
norm output is rounded to bf16 before it is modulated, the one rounding diffusers does not do);
ComfyUI's, which also rounds the modulation vectors, by 5.48e-3 (``benchmarks/bench_forward.py``,
docs/performance.md). In float32 the result equals diffusers' to float32 rounding (``addcmul`` may
fuse a multiply-add). tests/test_memory_modulation.py checks the float32 equality and the bf16 bound.

The block hook re-states diffusers' ``WanTransformerBlock.forward`` (diffusers 0.35 to 0.42) with
the modulation and residuals changed: keeping diffusers' forward is impossible because a strided
view cannot represent two groups with different values. Attention, LoRA adapters, layerwise
casting and the attention backend all still run through the block's own submodules. The
cross-attention norm (not modulated) runs exactly as diffusers runs it.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook

from ..errors import InputError

HOOK_NAME = "wan_egoexo_compact_modulation"
# More groups than this (timesteps changing every few tokens) falls back to diffusers' path.
MAX_GROUPS = 256


class _Groups:
    """How many groups of equal timesteps the current forward has: set by the embedder hook and
    read by the block hooks of the same forward; None when the forward is not compact."""

    count: int | None = None


def timestep_segments(timestep: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Split per-token timesteps [B, N] into runs that are constant along N in every sample.

    Returns (values [B, U], lengths of the U runs, summing to N). One device-to-host copy.
    """
    if timestep.ndim != 2 or timestep.shape[1] == 0:
        raise InputError(f"timestep: expected per-token timesteps [B, N], got {tuple(timestep.shape)}.")
    tokens = timestep.shape[1]
    changes = (timestep[:, 1:] != timestep[:, :-1]).any(dim=0).nonzero().flatten() + 1
    starts = [0] + changes.tolist()
    lengths = [stop - start for start, stop in zip(starts, starts[1:] + [tokens])]
    values = timestep[:, torch.tensor(starts, device=timestep.device)]
    return values, lengths


def group_size(lengths: list[int]) -> int:
    """The largest G such that every run is a whole number of G-token groups."""
    return math.gcd(*lengths)


class _CompactEmbedderHook(ModelHook):
    def __init__(self, groups: _Groups):
        super().__init__()
        self.groups = groups

    def new_forward(self, module, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                    timestep_seq_len=None):
        original = self.fn_ref.original_forward
        self.groups.count = None
        if timestep_seq_len is None:
            return original(timestep, encoder_hidden_states, encoder_hidden_states_image)
        values, lengths = timestep_segments(timestep.reshape(-1, timestep_seq_len))
        size = group_size(lengths)
        count = timestep_seq_len // size
        if count > MAX_GROUPS or (size == 1 and timestep_seq_len > 1):  # no sharing to exploit
            return original(timestep, encoder_hidden_states, encoder_hidden_states_image,
                            timestep_seq_len=timestep_seq_len)
        temb, timestep_proj, text, image = original(values.flatten(), encoder_hidden_states,
                                                    encoder_hidden_states_image, timestep_seq_len=len(lengths))
        runs = torch.tensor(lengths, device=temb.device)
        groups = torch.tensor([length // size for length in lengths], device=temb.device)
        self.groups.count = count
        # temb [B, N, dim] is what diffusers' output head reads (in the model dtype, as the default
        # keeps it); timestep_proj is one row per group: [B, K, 6 * dim].
        return (torch.repeat_interleave(temb, runs, dim=1, output_size=timestep_seq_len),
                torch.repeat_interleave(timestep_proj, groups, dim=1, output_size=count), text, image)


def _layer_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """diffusers' FP32LayerNorm without its float32 copy: PyTorch's layer norm computes in float32
    and writes the input's dtype. Affine norms run as diffusers runs them (float32 weights)."""
    if norm.weight is None and norm.bias is None:
        return F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
    return norm(x.float()).type_as(x)


def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.reshape(batch, groups, tokens // groups, dim)


def _modulated_norm(norm, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, groups: int) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift, scale/shift [B, K, 1, dim] float32 broadcast over K groups, in x's dtype."""
    normed = _grouped(_layer_norm(norm, x), groups)
    if torch.is_grad_enabled():
        return (normed * (1 + scale) + shift).type_as(x).reshape(x.shape)
    out = torch.empty_like(x)
    torch.addcmul(shift, normed, 1 + scale, out=_grouped(out, groups))  # float32 math, one rounding
    return out


def _gated_residual(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor, groups: int) -> torch.Tensor:
    """residual + update * gate (gate [B, K, 1, dim] float32), computed in float32, in residual's dtype."""
    if torch.is_grad_enabled():
        total = _grouped(residual, groups).float() + _grouped(update, groups).float() * gate
        return total.type_as(residual).reshape(residual.shape)
    out = torch.empty_like(residual)
    torch.addcmul(_grouped(residual, groups), _grouped(update, groups), gate, out=_grouped(out, groups))
    return out


class _CompactBlockHook(ModelHook):
    def __init__(self, groups: _Groups):
        super().__init__()
        self.groups = groups

    def new_forward(self, block, hidden_states, encoder_hidden_states, temb, rotary_emb):
        groups = self.groups.count
        if groups is None or temb.ndim != 4 or temb.shape[1] != groups or hidden_states.shape[1] % groups:
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        # [B, K, 1, 6, dim] float32 -> six [B, K, 1, dim] vectors, broadcast over each group's tokens.
        modulation = (block.scale_shift_table.unsqueeze(0) + temb.float()).unsqueeze(2)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = modulation.unbind(3)

        # 1. Self-attention
        normed = _modulated_norm(block.norm1, hidden_states, scale_msa, shift_msa, groups)
        update = block.attn1(normed, None, None, rotary_emb)
        del normed
        hidden_states = _gated_residual(hidden_states, update, gate_msa, groups)
        del update

        # 2. Cross-attention (no modulation): diffusers' own computation
        normed = block.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + block.attn2(normed, encoder_hidden_states, None, None)
        del normed

        # 3. Feed-forward
        normed = _modulated_norm(block.norm3, hidden_states, c_scale_msa, c_shift_msa, groups)
        update = block.ffn(normed)
        del normed
        return _gated_residual(hidden_states, update, c_gate_msa, groups)


def _blocks(transformer):
    blocks = getattr(transformer, "blocks", None)
    if getattr(transformer, "condition_embedder", None) is None or blocks is None or not all(
            type(block).__name__ == "WanTransformerBlock" for block in blocks):
        raise InputError(f"transformer: expected a diffusers WanTransformer3DModel, got {type(transformer).__name__}.")
    return list(blocks)


def compact_modulation_enabled(transformer) -> bool:
    registry = getattr(transformer.condition_embedder, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(HOOK_NAME) is not None


def enable_compact_modulation(transformer) -> None:
    """Install the compact modulation hooks (idempotent)."""
    blocks = _blocks(transformer)
    if compact_modulation_enabled(transformer):
        return
    groups = _Groups()
    HookRegistry.check_if_exists_or_initialize(transformer.condition_embedder).register_hook(
        _CompactEmbedderHook(groups), HOOK_NAME)
    for block in blocks:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_CompactBlockHook(groups), HOOK_NAME)


def disable_compact_modulation(transformer) -> None:
    """Remove the hooks; the transformer computes exactly as diffusers' default again."""
    for module in [transformer.condition_embedder, *_blocks(transformer)]:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            registry.remove_hook(HOOK_NAME, recurse=False)


@contextlib.contextmanager
def compact_modulation(transformer):
    """Compact modulation for the duration of the block (left on if it was already on)."""
    was_enabled = compact_modulation_enabled(transformer)
    enable_compact_modulation(transformer)
    try:
        yield transformer
    finally:
        if not was_enabled:
            disable_compact_modulation(transformer)
