"""The authors' flow-matching training objective: the fixed timestep table, the sigma shift, the
per-timestep loss weights, noising, and the weighted loss on the target latents.

Table (spec, "Reference training settings"): sigma_i = linspace(1, 0, N + 1)[i] for i < N, shifted
to shift * sigma / (1 + (shift - 1) * sigma), t_i = N * sigma_i (N = 1000). Each sample draws i
uniformly. Weight of t: y = exp(-2 ((t - N/2) / N)^2), w = (y - min y) * N / sum(y - min y).
Computed in float32, like the authors' table. diffusers' FlowMatchEulerDiscreteScheduler builds a
different grid (it starts at sigma 1 and ends at 1/N), so the table is built here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_egoexo.errors import InputError


@dataclass(frozen=True)
class FlowMatchingTable:
    sigmas: torch.Tensor  # [N] float32, shifted, from 1 down to just above 0
    timesteps: torch.Tensor  # [N] float32, N * sigma (the 0..1000 scale the transformer takes)
    weights: torch.Tensor  # [N] float32 loss weight of each entry; they sum to N

    @property
    def size(self) -> int:
        return int(self.sigmas.numel())

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Indices into the table, uniform over 0..N-1, drawn on the CPU from ``generator``."""
        return torch.randint(0, self.size, (batch,), generator=generator)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - sigma) x0 + sigma noise, per batch element."""
        sigma = self.sigmas[index].to(device=x0.device, dtype=x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (1.0 - sigma) * x0 + sigma * noise

    def loss(self, prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
             index: torch.Tensor) -> torch.Tensor:
        """mean over every element of w(t) * (prediction - (noise - x0))^2, in float32."""
        target = noise.float() - x0.float()
        weight = self.weights[index].to(prediction.device).view(-1, *([1] * (prediction.ndim - 1)))
        return (weight * (prediction.float() - target) ** 2).mean()


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow shift: shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def build_table(num_timesteps: int = 1000, shift: float = 5.0) -> FlowMatchingTable:
    if num_timesteps < 2 or shift <= 0:
        raise InputError(f"flow matching: expected num_timesteps >= 2 and shift > 0, got {num_timesteps}, {shift}.")
    sigmas = shift_sigmas(torch.linspace(1.0, 0.0, num_timesteps + 1, dtype=torch.float32)[:-1], shift)
    timesteps = sigmas * num_timesteps
    bell = torch.exp(-2.0 * ((timesteps - num_timesteps / 2) / num_timesteps) ** 2)
    lifted = bell - bell.min()
    weights = lifted * (num_timesteps / lifted.sum())
    return FlowMatchingTable(sigmas=sigmas, timesteps=timesteps, weights=weights)
