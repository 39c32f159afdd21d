"""The in-context input of one window of a long clip, for a host that slices the target into
windows itself (ComfyUI's context windows) and blends their outputs.

The host hands over the target frames of one window (and which clip frames they are); the clean
parts come from here: [reference?, the source frames of that window, the window's target], with
per-frame timesteps that are 0 on every clean frame and the target's timestep on the target. The
layout is the window's own (``InContextLayout`` of the window length), so the collaborative
positions are local to the window, exactly as ``windowed_flow`` calls ``predict_flow`` on each
window. Host-free: tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .layout import InContextLayout

WINDOWED_LATENT = "the LATENT of WorldWander In-Context Windows (native)"


@dataclass(frozen=True)
class WindowInput:
    """One in-context forward's input for a window: ``hidden`` [N, C, clean + n, h, w], ``timesteps``
    [N, clean + n] per latent frame, and the layout whose ``target`` slice cuts the output back."""

    hidden: torch.Tensor
    timesteps: torch.Tensor
    layout: InContextLayout


def window_frames(frames, clip_frames: int, window_length: int, name: str = "context window") -> list[int]:
    """The clip frame of each target frame in the window (all clip frames when ``frames`` is None);
    InputError naming ``name`` when they do not fit the clip or the window."""
    if frames is None:
        if window_length != clip_frames:
            raise InputError(f"latent_image: has {window_length} latent frames but the source clip has {clip_frames}; "
                             f"expected {WINDOWED_LATENT}, whole or through context windows.")
        return list(range(clip_frames))
    index = [int(i) for i in frames]
    if len(index) != window_length or not index or min(index) < 0 or max(index) >= clip_frames:
        raise InputError(f"{name}: covers clip frames {index[:3]}{'...' if len(index) > 3 else ''} ({len(index)} "
                         f"frames) for a window of {window_length} target frames in a clip of {clip_frames}; "
                         "expected one clip frame per window frame (context windows over the frame axis, dim 2, "
                         "with no retained or extra frames).")
    return index


def _per_frame_target_timesteps(timestep: torch.Tensor, batch: int, frames: list[int],
                                clip_frames: int) -> torch.Tensor:
    """[batch, window frames]: the target's timestep per window frame, from a [batch] timestep or a
    per-frame one that covers the window or the whole clip."""
    length = len(frames)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch)
    if timestep.ndim == 1 and timestep.shape[0] == batch:
        return timestep[:, None].expand(batch, length)
    if timestep.ndim == 2 and timestep.shape[0] == batch:
        if timestep.shape[1] == length:
            return timestep
        if timestep.shape[1] == clip_frames:
            return timestep[:, frames]
    raise InputError(f"timestep: expected [{batch}] or per frame [{batch}, {length}] for a window of {length} latent "
                     f"frames, got {tuple(timestep.shape)}; context windows need a latent batch of 1.")


def in_context_window(target: torch.Tensor, timestep: torch.Tensor, source: torch.Tensor, reference=None,
                      frames=None, positions: str = "collaborative") -> WindowInput:
    """The in-context sequence of the window whose target frames ``target`` [N, C, n, h, w] are the clip
    frames ``frames`` (None: the whole clip), given the whole clip's clean ``source`` [B, C, F, h, w]
    and ``reference`` [B, C, 1, h, w] or None (normalised latents; N a multiple of B, e.g. the
    conditional and unconditional passes batched). ``timestep``: the target's, [N] or per frame."""
    if target.ndim != 5 or source.ndim != 5 or target.shape[1] != source.shape[1] \
            or target.shape[3:] != source.shape[3:] or target.shape[0] % source.shape[0]:
        raise InputError(f"latent_image: a window of shape {tuple(target.shape)} does not match the source latents "
                         f"{tuple(source.shape)} (batch, channels, height, width); expected {WINDOWED_LATENT}.")
    index = window_frames(frames, source.shape[2], target.shape[2])
    repeat = target.shape[0] // source.shape[0]
    layout = InContextLayout(len(index), reference is not None, positions)
    parts = [] if reference is None else [reference]
    parts.append(source[:, :, index])
    clean = torch.cat([part.to(device=target.device, dtype=target.dtype) for part in parts], dim=2)
    hidden = torch.cat([clean.repeat(repeat, 1, 1, 1, 1), target], dim=2)
    per_frame = _per_frame_target_timesteps(timestep, target.shape[0], index, source.shape[2])
    timesteps = torch.cat([per_frame.new_zeros(per_frame.shape[0], layout.clean_frames), per_frame], dim=1)
    return WindowInput(hidden, timesteps, layout)
