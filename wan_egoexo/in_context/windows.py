"""Sliding windows over long clips: which latent frames each window covers, and the blending
weights that merge overlapping window predictions (they sum to one at every frame).

A clip longer than the trained length is covered by windows of that length; the last window is
aligned to the clip's end (never padded). At each denoising step every window's flow comes from
predict_flow on its own source frames, and the overlapping flows are averaged with ramps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError

RAMPS = ("linear", "cosine")


@dataclass
class WindowOptions:
    """Window length and overlap in LATENT frames (13 latent frames = the trained 49 video frames)."""

    length: int = 13
    overlap: int = 4
    ramp: str = "linear"
    batch: int = 1  # windows per forward pass (more is faster when memory allows)

    def validate(self) -> "WindowOptions":
        if not isinstance(self.length, int) or self.length < 1:
            raise InputError(f"window length: expected a positive number of latent frames, got {self.length!r}.")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.length:
            raise InputError(f"window overlap: expected 0 <= overlap < window length ({self.length}) latent "
                             f"frames, got {self.overlap!r}.")
        if self.ramp not in RAMPS:
            raise InputError(f"window ramp: {self.ramp!r} is not supported; expected one of {RAMPS}.")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise InputError(f"window batch: expected a positive integer, got {self.batch!r}.")
        return self


def window_starts(num_frames: int, length: int, overlap: int) -> list[int]:
    """First latent frame of each window; one window when the clip fits, the last one ends at the clip's end."""
    if num_frames <= length:
        return [0]
    stride = length - overlap
    starts = list(range(0, num_frames - length, stride))
    starts.append(num_frames - length)
    return starts


def _ramp(n: int, kind: str) -> torch.Tensor:
    """n weights rising strictly between 0 and 1 (exclusive), for an overlap of n frames."""
    x = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    return x if kind == "linear" else 0.5 - 0.5 * torch.cos(math.pi * x)


def blend_weights(num_frames: int, starts: list[int], length: int, ramp: str = "linear") -> torch.Tensor:
    """[windows, window length] float64 weights; for every clip frame, the weights of the windows that
    cover it sum to one. Each window fades in over its overlap with the previous window and out over
    its overlap with the next one."""
    span = min(length, num_frames)
    raw = torch.ones(len(starts), span, dtype=torch.float64)
    for k, start in enumerate(starts):
        if k > 0:
            lead = starts[k - 1] + span - start
            if lead > 0:
                raw[k, :lead] *= _ramp(lead, ramp)
        if k + 1 < len(starts):
            trail = start + span - starts[k + 1]
            if trail > 0:
                raw[k, span - trail:] *= _ramp(trail, ramp).flip(0)
    total = torch.zeros(num_frames, dtype=torch.float64)
    for k, start in enumerate(starts):
        total[start:start + span] += raw[k]
    for k, start in enumerate(starts):
        raw[k] /= total[start:start + span]
    return raw


def windowed_flow(flow_fn, latents: torch.Tensor, source: torch.Tensor, options: WindowOptions) -> torch.Tensor:
    """Blend ``flow_fn(latents_window, source_window)`` over the windows covering the clip.

    ``flow_fn`` takes [n*B, C, length, h, w] stacks of windows (n <= options.batch) and returns
    their flows; memory beyond the latents is one batch of windows.
    """
    frames = latents.shape[2]
    starts = window_starts(frames, options.length, options.overlap)
    if len(starts) == 1:
        return flow_fn(latents, source)
    weights = blend_weights(frames, starts, options.length, options.ramp)
    out = torch.zeros_like(latents)
    batch = latents.shape[0]
    for first in range(0, len(starts), options.batch):
        group = starts[first:first + options.batch]
        lat = torch.cat([latents[:, :, s:s + options.length] for s in group])
        src = torch.cat([source[:, :, s:s + options.length] for s in group])
        flows = flow_fn(lat, src).split(batch)
        for k, (start, flow) in enumerate(zip(group, flows)):
            w = weights[first + k].to(device=flow.device, dtype=flow.dtype).view(1, 1, -1, 1, 1)
            out[:, :, start:start + options.length] += flow * w
    return out
