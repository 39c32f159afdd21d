"""Rotary tables for diffusers' ``WanRotaryPosEmbed`` at the in-context frame indices.

Which frame index each latent frame carries (collaborative or uniform positions) is the layout's
business (layout.py); this module turns those indices into the cos/sin tables of a
diffusers Wan transformer. Rows and columns are numbered 0..h-1 and 0..w-1 in every part.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .layout import POSITION_MODES

__all__ = ["POSITION_MODES", "rotary_tables"]


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
