"""From dataset samples to the model's input: VAE posteriors of pixel samples and a fresh sample from
them (as the authors' ``latent_dist.sample()``), and arranging ego / exo / reference latents as source,
target and reference for the task.

``encode_posteriors`` is the single place where a clip becomes latents: ``prepare`` stores its mean and
std, a run from videos draws from it at once; both draw with ``sample_draws.draw_latents``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.latents import encode_posterior
from wan_egoexo.in_context.tasks import Task

from ..data.prompts import sample_prompt
from ..data.sample_draws import VIEWS, draw_latents


@dataclass
class LatentBatch:
    source: torch.Tensor  # [B, 48, f, h, w] normalised latents
    target: torch.Tensor
    reference: torch.Tensor | None  # [B, 48, 1, h, w] (ego -> exo) or None
    prompts: list[str]
    stems: list[str]


def encode_posteriors(vae, sample: dict) -> dict:
    """view -> (mean, std) in normalised units (float32, on the VAE's device) of one pixel sample's
    ego, exo and reference (None where the sample has none)."""
    out = {}
    for view in VIEWS:
        pixels = sample.get(view)
        out[view] = None if pixels is None else tuple(t[0] for t in encode_posterior(vae, pixels[None]))
    return out


def sample_latents(vae, sample: dict) -> dict[str, torch.Tensor | None]:
    """A posterior sample of each view of one pixel sample, drawn with its ``noise_seed``."""
    return draw_latents(encode_posteriors(vae, sample), sample["noise_seed"])


def task_batch(task: Task, samples: list[dict], device) -> LatentBatch:
    """Stack latent samples into the task's parts: exo -> ego is source exo, target ego; ego -> exo is
    source ego, target exo, with the reference."""
    source_view, target_view = ("ego", "exo") if task.uses_reference else ("exo", "ego")
    source = torch.stack([s[source_view] for s in samples]).to(device=device, dtype=torch.float32)
    target = torch.stack([s[target_view] for s in samples]).to(device=device, dtype=torch.float32)
    reference = None
    if task.uses_reference:
        missing = [s["stem"] for s in samples if s.get("reference") is None]
        if missing:
            raise InputError(f"pairs {missing}: no reference image; the {task.name} task needs one per pair.")
        reference = torch.stack([s["reference"] for s in samples]).to(device=device, dtype=torch.float32)
    prompts = [sample_prompt(task, s.get("caption")) for s in samples]
    return LatentBatch(source, target, reference, prompts, [s["stem"] for s in samples])


class LatentSource:
    """Turns a DataLoader batch (a list of samples) into a LatentBatch: encodes pixels with the VAE when
    training from videos, or only moves cached latents to the device."""

    def __init__(self, task: Task, device, vae=None):
        self.task, self.device, self.vae = task, torch.device(device), vae

    def __call__(self, samples: list[dict]) -> LatentBatch:
        if self.vae is not None:
            samples = [{**s, **sample_latents(self.vae, s)} for s in samples]
        return task_batch(self.task, samples, self.device)
