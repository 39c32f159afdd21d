"""Collaborative position encoding: the rotary frame index of every in-context token.

The in-context sequence is the parts one after another along the latent frame axis:
exo->ego is [source F, target F]; ego->exo is [reference 1, source F, target F].
With collaborative positions the target repeats the source's frame indices, so a target
token and the source token at the same (frame, row, column) share one rotary phase.
"uniform" (the paper's ablation) numbers all frames consecutively.
Rows and columns are numbered 0..h-1 and 0..w-1 in every part.
"""

from __future__ import annotations

import torch

from .errors import InputError

POSITION_MODES = ("collaborative", "uniform")


def frame_positions(num_frames: int, has_reference: bool, mode: str = "collaborative") -> torch.Tensor:
    """Rotary frame index for each latent frame of the in-context sequence (reference, source, target)."""
    if mode not in POSITION_MODES:
        raise InputError(f"positions: {mode!r} is not supported; expected one of {POSITION_MODES}.")
    if num_frames < 1:
        raise InputError(f"num_frames must be at least 1, got {num_frames}.")
    offset = 1 if has_reference else 0
    if mode == "uniform":
        return torch.arange(offset + 2 * num_frames)
    video = torch.arange(offset, offset + num_frames)
    parts = ([torch.zeros(1, dtype=torch.long)] if has_reference else []) + [video, video]
    return torch.cat(parts)


def rotary_tables(rope, frame_index: torch.Tensor, height_tokens: int, width_tokens: int):
    """cos and sin tables [1, tokens, 1, head_dim] for a frame-major token grid whose frames carry
    ``frame_index`` (one entry per latent frame), built from a diffusers ``WanRotaryPosEmbed``'s own
    frequency buffers, so the phases are exactly the ones its forward would produce for the same indices."""
    if int(frame_index.max()) >= rope.max_seq_len or max(height_tokens, width_tokens) > rope.max_seq_len:
        raise InputError(
            f"the in-context sequence needs rotary positions up to {int(frame_index.max())} frames and "
            f"{max(height_tokens, width_tokens)} rows/columns; this transformer's tables stop at {rope.max_seq_len}."
        )
    split = [rope.t_dim, rope.h_dim, rope.w_dim]
    frames = len(frame_index)
    tables = []
    for freqs in (rope.freqs_cos, rope.freqs_sin):
        t_part, h_part, w_part = freqs.split(split, dim=1)
        index = frame_index.to(t_part.device)
        grid = torch.cat(
            [
                t_part[index].view(frames, 1, 1, -1).expand(frames, height_tokens, width_tokens, -1),
                h_part[:height_tokens].view(1, height_tokens, 1, -1).expand(frames, height_tokens, width_tokens, -1),
                w_part[:width_tokens].view(1, 1, width_tokens, -1).expand(frames, height_tokens, width_tokens, -1),
            ],
            dim=-1,
        )
        tables.append(grid.reshape(1, frames * height_tokens * width_tokens, 1, -1))
    return tables[0], tables[1]
