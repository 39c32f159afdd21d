"""The in-context layout: where each part of the WorldWander sequence sits along the latent frame
axis, which of its frames are clean, and the rotary frame index of every frame.

The sequence is exo->ego [source F, target F] and ego->exo [reference 1, source F, target F]. The
reference and the source are clean (timestep 0); only the target is denoised. With collaborative
positions the target repeats the source's frame indices (and the reference sits at index 0), so a
target token and the source token at the same (frame, row, column) share one rotary phase;
"uniform" (the paper's ablation) numbers all frames consecutively. Rows and columns are numbered
0..h-1 and 0..w-1 in every part.

Host-free: ``predict_flow`` (diffusers) and the native ComfyUI patch both read the layout here, so
the math exists once. Frames are counted in latent frames (Wan's temporal patch is 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError

POSITION_MODES = ("collaborative", "uniform")


def check_positions(positions) -> str:
    if positions not in POSITION_MODES:
        raise InputError(f"positions: {positions!r} is not supported; expected one of {POSITION_MODES}.")
    return positions


@dataclass(frozen=True)
class InContextLayout:
    """The latent-frame layout of one in-context sequence."""

    video_frames: int  # latent frames of the source clip (the target has as many)
    has_reference: bool  # ego->exo: one reference frame leads the sequence
    positions: str = "collaborative"

    def __post_init__(self):
        check_positions(self.positions)
        if isinstance(self.video_frames, bool) or not isinstance(self.video_frames, int) or self.video_frames < 1:
            raise InputError(f"num_frames must be at least 1, got {self.video_frames!r}.")

    @classmethod
    def from_total_frames(cls, total_frames: int, has_reference: bool, positions: str = "collaborative",
                          name: str = "latent") -> "InContextLayout":
        """The layout of a whole in-context latent of ``total_frames`` frames; InputError naming
        ``name`` when that many frames cannot hold [reference?, source F, target F]."""
        reference_frames = 1 if has_reference else 0
        video_frames, odd = divmod(int(total_frames) - reference_frames, 2)
        if odd or video_frames < 1:
            parts = "[reference 1, source F, target F]" if has_reference else "[source F, target F]"
            raise InputError(f"{name}: {total_frames} latent frames cannot be the in-context sequence {parts}; "
                             "expected the LATENT of WorldWander In-Context (native), whole (no context windows "
                             "or frame slicing between it and the sampler).")
        return cls(video_frames, has_reference, positions)

    @property
    def reference_frames(self) -> int:
        return 1 if self.has_reference else 0

    @property
    def clean_frames(self) -> int:
        """The leading frames that stay clean: the reference (if any) and the source."""
        return self.reference_frames + self.video_frames

    @property
    def total_frames(self) -> int:
        return self.clean_frames + self.video_frames

    @property
    def target(self) -> slice:
        return slice(self.clean_frames, self.total_frames)

    def frame_index(self) -> torch.Tensor:
        """Rotary frame index (int64) of each latent frame of the sequence."""
        offset = self.reference_frames
        if self.positions == "uniform":
            return torch.arange(self.total_frames)
        video = torch.arange(offset, offset + self.video_frames)
        return torch.cat([torch.zeros(offset, dtype=torch.long), video, video])

    def needs_reindexing(self) -> bool:
        """Whether the frame indices differ from the consecutive ones a plain video model uses."""
        return not torch.equal(self.frame_index(), torch.arange(self.total_frames))

    def denoise_mask(self) -> torch.Tensor:
        """Per latent frame: 0.0 on the clean frames, 1.0 on the target (float32 [total_frames])."""
        mask = torch.zeros(self.total_frames)
        mask[self.target] = 1.0
        return mask

    def per_token_timesteps(self, target_timestep: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
        """[B, total_frames * tokens_per_frame]: 0 on every clean token, the target's timestep
        (``target_timestep`` [B]) on every target token."""
        batch = target_timestep.shape[0]
        mask = self.denoise_mask().to(target_timestep.device)
        per_frame = torch.where(mask.bool()[None], target_timestep[:, None].float(), 0.0)
        return per_frame[:, :, None].expand(batch, self.total_frames, tokens_per_frame).reshape(batch, -1)


def reindex_frames(table: torch.Tensor, frame_index: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Re-index a frame-major per-token table (e.g. rotary phases built for consecutive frames
    0..n-1 along ``dim``) so that frame i of the result is frame ``frame_index[i]`` of ``table``."""
    frames = int(frame_index.max()) + 1
    if table.shape[dim] % frames:
        raise InputError(f"table: {table.shape[dim]} tokens along dim {dim} are not whole frames of the "
                         f"{frames} frames the index refers to.")
    grid = table.unflatten(dim, (frames, table.shape[dim] // frames))
    picked = grid.index_select(dim, frame_index.to(device=table.device))
    return picked.flatten(dim, dim + 1)


def target_frames_from_mask(noise_mask, total_frames: int, name: str = "samples") -> slice:
    """The target frames of an in-context LATENT, read from its ``noise_mask`` ([B, 1, frames, h, w]
    or [B, frames, h, w]): the trailing frames whose mask is 1 (the clean frames before them are 0)."""
    expected = ("a LATENT from WorldWander In-Context (native), or a sampler's output of it (which keeps "
                "its noise_mask)")
    if not isinstance(noise_mask, torch.Tensor) or noise_mask.ndim not in (4, 5):
        raise InputError(f"{name}: has no video noise_mask marking the target frames; expected {expected}.")
    frames_dim = noise_mask.ndim - 3
    if noise_mask.shape[frames_dim] != total_frames:
        raise InputError(f"{name}: its noise_mask covers {noise_mask.shape[frames_dim]} frames but the latent has "
                         f"{total_frames}; expected {expected}.")
    per_frame = noise_mask.float().movedim(frames_dim, 0).reshape(total_frames, -1)
    low, high = per_frame.amin(dim=1), per_frame.amax(dim=1)
    target = (low == 1.0) & (high == 1.0)
    clean = (low == 0.0) & (high == 0.0)
    first = int(target.nonzero()[0]) if bool(target.any()) else total_frames
    if first == 0 or first == total_frames or not bool(clean[:first].all()) or not bool(target[first:].all()):
        raise InputError(f"{name}: its noise_mask does not mark clean leading frames (0) and a target block at "
                         f"the end (1); expected {expected}.")
    return slice(first, total_frames)
