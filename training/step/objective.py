"""The training objective for one micro-batch: prompt dropout, a timestep and noise per sample, the
in-context forward through the core's ``predict_flow`` (the target part only), and the authors'
weighted flow-matching loss in float32.

Every random draw comes from one CPU generator, in a fixed order (dropout, timestep index, noise),
so a run is reproducible and resumable from the generator's state alone.
"""

from __future__ import annotations

import contextlib

import torch

from wan_egoexo.in_context.predict_flow import predict_flow

from .batches import LatentBatch
from .flow_matching import FlowMatchingTable
from ..data.prompts import DROPPED_PROMPT, PromptTable


def autocast_context(device: torch.device, mixed_precision: str):
    """bf16 autocast for mixed precision, nothing otherwise."""
    if mixed_precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flow_matching_loss(model, batch: LatentBatch, prompts: PromptTable, table: FlowMatchingTable,
                       generator: torch.Generator, prompt_dropout: float = 0.0,
                       positions: str = "collaborative", mixed_precision: str = "no") -> torch.Tensor:
    """Scalar float32 loss of ``model`` (anything predict_flow accepts) on one latent batch."""
    target = batch.target
    device = target.device
    size = target.shape[0]
    dropped = torch.rand(size, generator=generator) < prompt_dropout
    texts = [DROPPED_PROMPT if drop else prompt for drop, prompt in zip(dropped.tolist(), batch.prompts)]
    text = prompts.batch(texts, device=device)
    index = table.draw(size, generator)
    noise = torch.randn(target.shape, generator=generator, dtype=torch.float32).to(device)
    x0 = target.float()
    noisy = table.noisy(x0, noise, index)
    timesteps = table.timesteps[index].to(device)
    with autocast_context(device, mixed_precision):
        prediction = predict_flow(model, noisy, timesteps, text, batch.source, batch.reference, positions)
    return table.loss(prediction, x0, noise, index)
