"""Stopping a run at the first non-finite number, with the step and the likely cause.

Every optimizer step checks, on every rank together, the loss of each micro-batch, the total gradient
norm (before the update is applied) and the LoRA weights (after it). A NaN or Inf stops the run
before anything of that step reaches the weights or a checkpoint, so the last checkpoint on disk is
the last good one and no non-finite LoRA is ever saved. The message names the step, what went
non-finite, the last good checkpoint, and the likely cause, judged from the inputs, the LoRA weights
and the learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from wan_egoexo.errors import WanEgoExoError

# LoRA weights start near unit scale (A ~ Kaiming, B = 0); beyond this they have run away.
RUNAWAY_WEIGHT = 1e3


class NonFiniteTrainingError(WanEgoExoError):
    """The loss, a gradient or a weight became NaN / Inf; the run stopped."""


def _scalar(value: torch.Tensor) -> float:
    if hasattr(value, "full_tensor"):  # a DTensor under FSDP: the value over every shard
        value = value.full_tensor()
    return float(value)


def gradient_norm(params) -> float:
    """Total L2 norm of the gradients (0.0 when there are none)."""
    grads = [p.grad for p in params if p.grad is not None]
    return _scalar(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def weight_stats(named_params) -> tuple[bool, float, float]:
    """(every weight finite, max |weight| of all LoRA tensors, max |weight| of the lora_B tensors)."""
    peak, peak_b, finite = 0.0, 0.0, True
    for name, param in named_params:
        value = _scalar(param.detach().abs().amax()) if param.numel() else 0.0
        finite = finite and math.isfinite(value)
        peak = max(peak, value) if math.isfinite(value) else peak
        if "lora_B" in name and math.isfinite(value):
            peak_b = max(peak_b, value)
    return finite, peak, peak_b


def batch_finite(batch) -> bool:
    parts = [batch.source, batch.target] + ([batch.reference] if batch.reference is not None else [])
    return all(bool(torch.isfinite(part).all()) for part in parts)


@dataclass
class StepHealth:
    """What one optimizer step saw; ``ok`` when nothing was non-finite."""

    losses: list[float] = field(default_factory=list)
    bad_data_stems: list[str] = field(default_factory=list)
    grad_norm: float = 0.0
    weights_finite: bool = True

    @property
    def ok(self) -> bool:
        return (not self.bad_data_stems and all(math.isfinite(x) for x in self.losses)
                and math.isfinite(self.grad_norm) and self.weights_finite)


def likely_cause(health: StepHealth, weight_peak: float, lora_b_peak: float, lr: float, base_lr: float,
                 mixed_precision: str) -> str:
    if health.bad_data_stems:
        return (f"the training data: the latents of {sorted(set(health.bad_data_stems))[:5]} hold NaN/Inf (a damaged "
                "cache or VAE output); run prepare again, or check those clips")
    if not health.weights_finite:
        return (f"the learning rate: the update at learning rate {lr:.3g} made the LoRA weights non-finite; "
                "lower optim.lr or set optim.grad_clip")
    if weight_peak > RUNAWAY_WEIGHT:
        return (f"the learning rate: optim.lr {base_lr:.3g} (now {lr:.3g}) made the LoRA weights grow to "
                f"max |w| = {weight_peak:.3g}; lower optim.lr or set optim.grad_clip")
    if lora_b_peak == 0.0:
        precision = " or bf16 overflow (try --train.mixed_precision no)" if mixed_precision == "bf16" else ""
        return ("the base model or the prompt embeddings: the output is non-finite with the LoRA as initialised "
                f"(it adds nothing yet); check the model files{precision}")
    return ("numerical divergence: lower optim.lr, set optim.grad_clip, or train with "
            "--train.mixed_precision no")


def describe(step: int, health: StepHealth, cause: str, last_checkpoint) -> str:
    seen = []
    if health.bad_data_stems:
        seen.append("the input latents are non-finite")
    bad_losses = [x for x in health.losses if not math.isfinite(x)]
    if bad_losses:
        seen.append(f"the loss is {bad_losses[0]}")
    if not math.isfinite(health.grad_norm):
        seen.append(f"the gradient norm is {health.grad_norm}")
    if not health.weights_finite:
        seen.append("the LoRA weights became non-finite")
    kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint is not None
            else "no checkpoint had been written yet")
    return (f"step {step}: {', '.join(seen)}; training stopped and nothing of this step was saved ({kept}). "
            f"Likely cause: {cause}.")
