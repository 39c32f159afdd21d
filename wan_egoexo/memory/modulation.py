"""Compact timestep modulation: the per-token timesteps of the in-context forward hold only a few
distinct values (0 on the source/reference tokens, t on the target), so the timestep embedding and
the six modulation vectors are computed once per run of equal timesteps and applied per segment.

Default diffusers, with ``timestep`` of shape [B, N], embeds every token: the condition embedder
keeps ``timestep_proj`` [B, N, 6, dim] in the model dtype for the whole forward, and every block
materialises ``scale_shift_table + temb.float()`` as a new [B, N, 6, dim] float32 tensor (plus a
float32 copy of temb first, in a bf16 model). At 704x1280x49 that is 1.7 GB of float32 per batch
element per block call. Here:

- a diffusers hook on ``transformer.condition_embedder`` runs the embedder's own forward on the
  distinct timesteps only (one row per segment) and returns ``timestep_proj`` as [B, U, 6*dim];
- a hook on every ``WanTransformerBlock`` runs the block with the modulation applied segment by
  segment on slices of the normalised activations, so no [B, N, 6, dim] tensor ever exists.

The block hook re-states diffusers' ``WanTransformerBlock.forward`` (diffusers 0.35 to 0.42) with
only the broadcast of the modulation changed; keeping diffusers' forward is impossible because a
strided view cannot represent two runs with different values. The block's elementwise operations
are the same ones in the same order, so a block gives bitwise the default's result; the embedder's
matmuls on U rows instead of N may round the last bit differently (about 1e-7 relative on the CPU).
tests/test_memory_options.py checks both against the unhooked model. Attention, LoRA adapters,
layerwise casting and the attention backend all still run through the block's own submodules.

Enable it before block offloading (the offload hook must wrap this one) and before compiling.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..errors import InputError

HOOK_NAME = "wan_egoexo_compact_modulation"
# More distinct timestep runs than this (a timestep per token, say) falls back to diffusers' path.
MAX_SEGMENTS = 16
_GROUP_OFFLOAD_HOOKS = ("group_offloading", "lazy_prefetch_group_offloading")


class _Segments:
    """Run lengths of equal timesteps along the token axis, set by the embedder hook each forward
    and read by the block hooks of the same forward; None when the forward is not compact."""

    lengths: list[int] | None = None


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


def _expand_segments(compact: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """[B, U, ...] -> [B, N, ...] with row u repeated lengths[u] times."""
    counts = torch.tensor(lengths, device=compact.device)
    return torch.repeat_interleave(compact, counts, dim=1, output_size=sum(lengths))


class _CompactEmbedderHook(ModelHook):
    def __init__(self, segments: _Segments):
        super().__init__()
        self.segments = segments

    def new_forward(self, module, timestep, encoder_hidden_states, encoder_hidden_states_image=None,
                    timestep_seq_len=None):
        original = self.fn_ref.original_forward
        self.segments.lengths = None
        if timestep_seq_len is None:
            return original(timestep, encoder_hidden_states, encoder_hidden_states_image)
        values, lengths = timestep_segments(timestep.reshape(-1, timestep_seq_len))
        if len(lengths) > MAX_SEGMENTS:
            return original(timestep, encoder_hidden_states, encoder_hidden_states_image,
                            timestep_seq_len=timestep_seq_len)
        temb, timestep_proj, text, image = original(values.flatten(), encoder_hidden_states,
                                                    encoder_hidden_states_image, timestep_seq_len=len(lengths))
        self.segments.lengths = lengths
        # temb [B, N, dim] is what diffusers' output norm reads; it is the model-dtype tensor the
        # default keeps too. timestep_proj stays compact: [B, U, 6 * dim].
        return _expand_segments(temb, lengths), timestep_proj, text, image


def _scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """x * (1 + scale) + shift with scale/shift [B, U, dim] applied to the token runs of x [B, N, dim].
    x must be a fresh float32 tensor; it is updated in place when no gradient is recorded."""
    if not torch.is_grad_enabled():
        start = 0
        for index, length in enumerate(lengths):
            part = x[:, start:start + length]
            part.mul_(1 + scale[:, index:index + 1]).add_(shift[:, index:index + 1])
            start += length
        return x
    parts, start = [], 0
    for index, length in enumerate(lengths):
        parts.append(x[:, start:start + length] * (1 + scale[:, index:index + 1]) + shift[:, index:index + 1])
        start += length
    return torch.cat(parts, dim=1)


def _gated_residual(residual: torch.Tensor, update: torch.Tensor, gate: torch.Tensor,
                    lengths: list[int]) -> torch.Tensor:
    """residual.float() + update * gate (gate [B, U, dim] per token run), in float32."""
    if not torch.is_grad_enabled():
        # update.float() may be update itself (a float32 model); it is a fresh output we own.
        product = update.float()
        start = 0
        for index, length in enumerate(lengths):
            product[:, start:start + length].mul_(gate[:, index:index + 1])
            start += length
        return product.add_(residual.float())  # a + b == b + a exactly
    parts, start = [], 0
    for index, length in enumerate(lengths):
        parts.append(update[:, start:start + length].float() * gate[:, index:index + 1])
        start += length
    return residual.float() + torch.cat(parts, dim=1)


class _CompactBlockHook(ModelHook):
    def __init__(self, segments: _Segments):
        super().__init__()
        self.segments = segments

    def new_forward(self, block, hidden_states, encoder_hidden_states, temb, rotary_emb):
        lengths = self.segments.lengths
        if lengths is None or temb.ndim != 4 or temb.shape[1] != len(lengths) \
                or sum(lengths) != hidden_states.shape[1]:
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        # [B, U, 6, dim] float32: six [B, U, dim] modulation rows per token run.
        modulation = block.scale_shift_table.unsqueeze(0) + temb.float()
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = modulation.unbind(2)

        # 1. Self-attention
        normed = _scale_shift(block.norm1(hidden_states.float()), scale_msa, shift_msa, lengths)
        attn_output = block.attn1(normed.type_as(hidden_states), None, None, rotary_emb)
        hidden_states = _gated_residual(hidden_states, attn_output, gate_msa, lengths).type_as(hidden_states)

        # 2. Cross-attention (no modulation)
        normed = block.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + block.attn2(normed, encoder_hidden_states, None, None)

        # 3. Feed-forward
        normed = _scale_shift(block.norm3(hidden_states.float()), c_scale_msa, c_shift_msa, lengths)
        ff_output = block.ffn(normed.type_as(hidden_states))
        return _gated_residual(hidden_states, ff_output, c_gate_msa, lengths).type_as(hidden_states)


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
    """Install the compact modulation hooks (idempotent). Must come before block offloading."""
    blocks = _blocks(transformer)
    if compact_modulation_enabled(transformer):
        return
    for block in blocks:
        registry = getattr(block, "_diffusers_hook", None)
        if registry is not None and any(registry.get_hook(name) for name in _GROUP_OFFLOAD_HOOKS):
            raise InputError("compact modulation: enable it before block offloading (enable_block_offload), "
                             "so that the offload hook wraps it; the transformer is already offloaded.")
    segments = _Segments()
    HookRegistry.check_if_exists_or_initialize(transformer.condition_embedder).register_hook(
        _CompactEmbedderHook(segments), HOOK_NAME)
    for block in blocks:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_CompactBlockHook(segments), HOOK_NAME)


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
