"""Choosing the memory options from the free GPU memory, with the memory model of footprint.py.

The options are tried from the fastest to the most frugal; the first whose estimated peak fits in
the budget (free memory minus a safety margin for the CUDA context and fragmentation) wins:

1. everything resident, compact modulation (always on: exact and cheaper);
2. + VAE tiling (only the decode and encode change, at a few seconds' cost);
3. + block offloading with CUDA streams (exact; transfers overlap compute);
4. + fp8 weight storage instead of offloading (lossy, so after the exact option);
5. both offloading and fp8.

The text encoder runs on the GPU when it fits there alone (the pipeline releases it before the
transformer loads), else on the CPU; the prompt cache is always on. On the CPU nothing is
offloaded or cast and VAE tiling is off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..latents import latent_shape
from .attention_choice import choose_attention_backend
from .footprint import text_encoder_bytes, translation_peaks

SAFETY_FRACTION = 0.10  # of the budget, for allocator fragmentation and estimate error
CONTEXT_BYTES = 1 << 30  # CUDA context, cuBLAS/cuDNN workspaces: not seen by torch's allocator
OFFLOAD_RESIDENT_BLOCKS = 2  # one block per group, the next one prefetched on a stream


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    compact_modulation: bool = True
    vae_tiling: bool = False
    block_offload: bool = False
    fp8_weights: bool = False
    text_encoder_device: str = "cpu"
    prompt_cache: bool = True
    attention: str = "sdpa"
    compile_blocks: bool = False
    estimated_peak_bytes: int | None = None
    budget_bytes: int | None = None
    fits: bool = True  # False: even the most frugal plan is estimated above the budget

    def as_dict(self) -> dict:
        return asdict(self)


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (driver view, other processes included), None on the CPU."""
    device = resolve_device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


CANDIDATES = (  # (vae_tiling, block_offload, fp8_weights), fastest first
    (False, False, False),
    (True, False, False),
    (True, True, False),
    (True, False, True),
    (True, True, True),
)


def choose_memory_plan(height: int = 704, width: int = 1280, frames: int = 49, has_reference: bool = False,
                       cfg_batch: int = 2, device=None, budget_bytes: int | None = None,
                       lora_rank: int = 80, config=None) -> MemoryPlan:
    """The fastest option set whose estimated peak fits ``budget_bytes`` (default: the device's
    free memory now). ``cfg_batch`` is 2 with classifier-free guidance (one batched forward)."""
    device = resolve_device(device)
    latent_frames, _, _ = latent_shape(frames, height, width)
    if cfg_batch not in (1, 2):
        raise InputError(f"cfg_batch: expected 1 (no guidance) or 2 (guidance in one batch), got {cfg_batch!r}.")
    if device.type != "cuda":
        return MemoryPlan(device=str(device), text_encoder_device=str(device), attention="sdpa")
    if budget_bytes is None:
        budget_bytes = free_device_memory(device)
        if budget_bytes is None:
            raise InputError(f"device: {device} is not an available CUDA device, so its free memory is unknown.")
    usable = int(budget_bytes * (1 - SAFETY_FRACTION)) - CONTEXT_BYTES
    text_on_device = text_encoder_bytes(torch.bfloat16) <= usable
    attention = choose_attention_backend(device, torch.bfloat16)
    best = None
    for tiling, offload, fp8 in CANDIDATES:
        peaks = translation_peaks(height, width, latent_frames, has_reference, cfg_batch, torch.bfloat16,
                                  compact_modulation=True, fp8=fp8,
                                  offload_blocks=OFFLOAD_RESIDENT_BLOCKS if offload else None,
                                  vae_tiling=tiling, text_encoder_on_device=False, lora_rank=lora_rank,
                                  config=config)
        best = MemoryPlan(device=str(device), vae_tiling=tiling, block_offload=offload, fp8_weights=fp8,
                          text_encoder_device=str(device) if text_on_device else "cpu", attention=attention,
                          estimated_peak_bytes=peaks.peak, budget_bytes=int(budget_bytes),
                          fits=peaks.peak <= usable)
        if best.fits:
            return best
    return best
