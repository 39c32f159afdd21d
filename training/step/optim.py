"""The optimizer and learning-rate schedule of the authors: AdamW (betas 0.9 / 0.95, eps 1e-8,
weight decay 0.01) on the LoRA parameters, the base learning rate scaled by
sqrt(world size x gradient accumulation), and a linear warm-up then constant.

The warm-up factor is min(step / warmup_steps, 1) with the step counted from 0, exactly as the
authors' LambdaLR: the first optimizer step runs at learning rate 0.
"""

from __future__ import annotations

import functools
import math

import torch

from ..config import OptimConfig


def effective_lr(config: OptimConfig, world_size: int, grad_accum: int) -> float:
    return config.lr * math.sqrt(world_size * grad_accum) if config.scale_lr else config.lr


def warmup_factor(step: int, warmup_steps: int) -> float:
    return 1.0 if warmup_steps <= 0 else min(step / warmup_steps, 1.0)


def build_optimizer(params, config: OptimConfig, world_size: int, grad_accum: int) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params), lr=effective_lr(config, world_size, grad_accum),
                             betas=(float(config.betas[0]), float(config.betas[1])), eps=config.eps,
                             weight_decay=config.weight_decay)


def build_scheduler(optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    # a partial, not a lambda: LambdaLR's state_dict then stays plain data
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(warmup_factor, warmup_steps=warmup_steps))


def clip_gradients(params, max_value: float | None, mode: str) -> None:
    if max_value is None:
        return
    if mode == "value":
        torch.nn.utils.clip_grad_value_(params, max_value)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_value)
