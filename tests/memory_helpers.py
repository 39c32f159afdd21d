"""Inputs shared by the memory-option tests (a tiny in-context batch) and a relative-error measure."""

import torch


def memory_inputs(batch=2, reference=True, seed=0, text_tokens=7):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, 48, 3, 8, 12, generator=g)
    target = torch.randn(batch, 48, 3, 8, 12, generator=g)
    ref = torch.randn(batch, 48, 1, 8, 12, generator=g) if reference else None
    text = torch.randn(batch, text_tokens, 32, generator=g)
    timestep = torch.tensor([700.0, 250.0][:batch])
    return target, timestep, text, source, ref


def rel_error(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())

