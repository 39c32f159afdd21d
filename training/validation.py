"""Validation renders: every N steps, held-out pairs (never trained on) are translated with the
core's sampler (UniPC, shift 5, text-only CFG, the LoRA being trained) and written as mp4 side by
side: [reference |] source | generated | ground truth, to ``<output_dir>/validation/``.

The window is the pair's variant-0 window (the same every time), so renders of different steps are
comparable. The VAE is the run's own when training from videos, or loaded for the render and freed.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wan_egoexo.latents import decode_latents
from wan_egoexo.sampling import SamplingSettings, sample_target
from wan_egoexo.tasks import Task
from wan_egoexo.video_io import write_video

from .batches import encode_sample, task_batch
from .config import ValidationConfig
from .dataset import VideoTripletDataset
from .dataset_checks import ClipGeometry, WindowSettings
from .pairing import Triplet
from .prompts import DROPPED_PROMPT, PromptTable, sample_prompt


@dataclass
class ValidationPlan:
    triplets: list[Triplet]
    geometry: dict[str, ClipGeometry]
    window: WindowSettings
    config: ValidationConfig
    task: Task
    positions: str
    seed: int
    folder: Path

    def due(self, step: int) -> bool:
        return bool(self.config.every) and bool(self.triplets) and step % self.config.every == 0


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    pixels = ((video.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def render_pair(transformer, vae, prompts: PromptTable, plan: ValidationPlan, triplet: Triplet, step: int,
                write: bool = True) -> Path | None:
    """Translate one held-out pair and write the side-by-side mp4 (when ``write``); returns its path."""
    dataset = VideoTripletDataset([triplet], plan.geometry, plan.window, plan.seed,
                                  load_references=plan.task.uses_reference)
    pixels = dataset.sample(0, 0)
    device = transformer.patch_embedding.weight.device
    batch = task_batch(plan.task, [{**pixels, **encode_sample(vae, pixels)}], device)
    text = prompts.batch([sample_prompt(plan.task, triplet.caption)], device=device)
    negative = prompts.batch([DROPPED_PROMPT], device=device)
    settings = SamplingSettings(steps=plan.config.steps, cfg=plan.config.cfg, seed=plan.config.seed)
    was_training = transformer.training
    transformer.eval()
    try:
        latents = sample_target(transformer, batch.source, text, negative, reference=batch.reference,
                                positions=plan.positions, settings=settings)
    finally:
        transformer.train(was_training)
    if not write:
        return None
    generated = decode_latents(vae, latents)[0]
    source_view, target_view = ("ego", "exo") if plan.task.uses_reference else ("exo", "ego")
    panels = [pixels[source_view], generated.cpu(), pixels[target_view]]
    if plan.task.uses_reference:
        panels.insert(0, pixels["reference"].expand_as(pixels[source_view]))
    frames = _to_uint8(torch.cat(panels, dim=-1))
    path = plan.folder / f"step-{step:08d}_{triplet.stem}.mp4"
    return write_video(path, frames, plan.config.fps)


def run_validation(transformer, vae_provider, prompts: PromptTable, plan: ValidationPlan, step: int,
                   write: bool = True) -> list[Path]:
    """Render every held-out pair. ``vae_provider()`` returns (vae, release) where release() frees a VAE
    loaded only for this."""
    vae, release = vae_provider()
    try:
        paths = [render_pair(transformer, vae, prompts, plan, t, step, write) for t in plan.triplets]
    finally:
        release()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [p for p in paths if p is not None]
