"""Validation: every N steps, held-out pairs (never trained on) are translated with the core's sampler
(UniPC, shift 5, text-only CFG, the LoRA being trained), written as mp4 side by side ([reference |]
source | generated | ground truth) to ``<output_dir>/validation/``, and scored: PSNR and SSIM (and LPIPS
when its weights are on this machine) of the generated target against the ground-truth view, on 8-bit
frames (see video_metrics), logged beside the videos and to TensorBoard.

The window and posterior sample are those of epoch 0 (the same every time), so renders of different steps are
comparable. The VAE is the run's own when training from videos, or loaded for the render and freed.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wan_egoexo.in_context.latents import decode_latents
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target
from wan_egoexo.in_context.tasks import Task
from wan_egoexo.video.read_write import write_video

from ..step.batches import sample_latents, task_batch
from ..config import ValidationConfig
from ..data.dataset import VideoTripletDataset
from ..data.dataset_checks import ClipGeometry, WindowSettings
from ..data.pairing import Triplet
from ..data.prompts import DROPPED_PROMPT, PromptTable, sample_prompt
from .video_metrics import VideoMetrics, mean_metrics


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
    _metrics: VideoMetrics | None = field(default=None, repr=False)

    def due(self, step: int) -> bool:
        return bool(self.config.every) and bool(self.triplets) and step % self.config.every == 0

    @property
    def lpips_note(self) -> str | None:
        """Why LPIPS is not among the scores (None when it is, or before the first validation)."""
        return None if self._metrics is None else self._metrics.lpips_note

    def metrics(self, device) -> VideoMetrics:
        """The metric models, built on first use."""
        if self._metrics is None:
            self._metrics = VideoMetrics(device, self.config.lpips)
        return self._metrics


@dataclass
class PairResult:
    stem: str
    video: Path
    scores: dict[str, float]

    def row(self) -> dict:
        return {"stem": self.stem, "video": self.video.name, **self.scores}


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    pixels = ((video.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def render_pair(transformer, vae, prompts: PromptTable, plan: ValidationPlan, triplet: Triplet, step: int,
                write: bool = True) -> PairResult | None:
    """Translate one held-out pair; when ``write``, write the side-by-side mp4 and score the generated target."""
    dataset = VideoTripletDataset([triplet], plan.geometry, plan.window, plan.seed,
                                  load_references=plan.task.uses_reference)
    pixels = dataset.sample(0, 0)
    device = transformer.patch_embedding.weight.device
    batch = task_batch(plan.task, [{**pixels, **sample_latents(vae, pixels)}], device)
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
    scores = plan.metrics(generated.device)(generated, pixels[target_view].to(generated.device))
    panels = [pixels[source_view], generated.cpu(), pixels[target_view]]
    if plan.task.uses_reference:
        panels.insert(0, pixels["reference"].expand_as(pixels[source_view]))
    frames = _to_uint8(torch.cat(panels, dim=-1))
    path = plan.folder / f"step-{step:08d}_{triplet.stem}.mp4"
    return PairResult(triplet.stem, write_video(path, frames, plan.config.fps), scores)


def run_validation(transformer, vae_provider, prompts: PromptTable, plan: ValidationPlan, step: int,
                   write: bool = True) -> tuple[list[PairResult], dict[str, float]]:
    """Render and score every held-out pair: (results, mean of each metric over the pairs); empty where
    ``write`` is False. ``vae_provider()`` returns (vae, release), release() freeing a VAE loaded for this."""
    vae, release = vae_provider()
    try:
        results = [render_pair(transformer, vae, prompts, plan, t, step, write) for t in plan.triplets]
    finally:
        release()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    results = [r for r in results if r is not None]
    return results, mean_metrics([r.scores for r in results]) if results else {}
