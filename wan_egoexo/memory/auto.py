"""Choosing the memory options from the free GPU memory and the actual clip, with the memory model
of footprint.py.

Exact savings come before lossy ones. Candidates, from the fastest to the most frugal; the first
whose estimated peak fits the budget (free memory minus a safety margin for the CUDA context and
fragmentation) wins:

1. everything resident, guidance in one batch (compact modulation and merged LoRAs are always on:
   exact, faster and smaller);
2. sequential guidance: the conditional and unconditional forwards one after the other (exact,
   half the activations);
3. partial block offloading: as many blocks resident as fit, the rest streamed from CPU memory
   ahead of use (exact; transfers overlap compute);
4. + VAE tiling (lossy at the tile seams);
5. + fp8 weight storage (lossy), with as many blocks resident as then fit.

A fixed ``cfg_batch`` (the user's choice) skips the other batch size. The text encoder runs on the
GPU when it fits there alone (the pipeline releases it before the transformer loads), else on the
CPU; the prompt cache is always on. On the CPU nothing is offloaded or cast and VAE tiling is off.

``choose_memory_plan`` plans a whole translation (the CLI: encode, sample and decode with the VAE
and transformer resident together); ``choose_sampling_plan`` plans the sampling stage alone (the
sampler node, where the VAE's memory is already accounted for by the free memory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..in_context.latents import latent_shape
from .attention_choice import choose_attention_backend
from .flops import WAN22_5B_CONFIG, config_value, in_context_tokens
from .footprint import sampling_bytes, text_encoder_bytes, translation_peaks

SAFETY_FRACTION = 0.10  # of the budget, for allocator fragmentation and estimate error
CONTEXT_BYTES = 1 << 30  # CUDA context, cuBLAS/cuDNN workspaces: not seen by torch's allocator
UNFUSED_RANK_GUESS = 80  # the WorldWander rank, for planning unfused adapters before they are read


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    compact_modulation: bool = True
    cfg_batch: int = 2  # 2: conditional and unconditional in one batch; 1: one after the other
    resident_blocks: int | None = None  # None: every block resident; N: N resident, the others streamed
    vae_tiling: bool = False
    fp8_weights: bool = False
    merge_loras: bool = True
    text_encoder_device: str = "cpu"
    prompt_cache: bool = True
    attention: str = "sdpa"
    compile_blocks: bool = False
    estimated_peak_bytes: int | None = None
    budget_bytes: int | None = None
    fits: bool = True  # False: even the most frugal plan is estimated above the budget

    @property
    def block_offload(self) -> bool:
        return self.resident_blocks is not None

    def as_dict(self) -> dict:
        return {**asdict(self), "block_offload": self.block_offload}


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (driver view, other processes included), None on the CPU."""
    device = resolve_device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def usable_bytes(budget_bytes: int) -> int:
    return int(budget_bytes * (1 - SAFETY_FRACTION)) - CONTEXT_BYTES


def check_cfg_batch(cfg_batch) -> None:
    if cfg_batch not in (None, 1, 2):
        raise InputError(f"cfg_batch: expected 1 (conditional and unconditional one after the other), 2 (in one "
                         f"batch) or None (choose), got {cfg_batch!r}.")


def _candidates(batches, lossy: bool = True):
    """(cfg_batch, offload, vae_tiling, fp8) from the fastest to the most frugal; exact options first."""
    last = batches[-1]
    exact = [(batch, False, False, False) for batch in batches] + [(last, True, False, False)]
    return exact + ([(last, True, True, False), (last, False, True, True), (last, True, True, True)] if lossy else [])


def _most_resident(peak_of, layers: int, usable: int) -> int:
    """The largest resident block count whose peak fits (0 when none does)."""
    for resident in range(layers - 1, -1, -1):
        if peak_of(resident) <= usable:
            return resident
    return 0


def _search(peak_of, batches, layers: int, usable: int, lossy: bool = True):
    """The first candidate that fits, else the most frugal: (cfg_batch, resident or None, vae_tiling,
    fp8, peak, fits)."""
    found = None
    for batch, offload, tiling, fp8 in _candidates(batches, lossy):
        resident = _most_resident(lambda n: peak_of(batch, n, tiling, fp8), layers, usable) if offload else None
        peak = peak_of(batch, resident, tiling, fp8)
        found = (batch, resident, tiling, fp8, peak, peak <= usable)
        if found[-1]:
            break
    return found


def _batches(guidance: bool, cfg_batch) -> tuple[int, ...]:
    check_cfg_batch(cfg_batch)
    if not guidance:
        return (1,)
    return (cfg_batch,) if cfg_batch is not None else (2, 1)


def _budget(device, budget_bytes):
    if budget_bytes is None:
        budget_bytes = free_device_memory(device)
        if budget_bytes is None:
            raise InputError(f"device: {device} is not an available CUDA device, so its free memory is unknown.")
    return int(budget_bytes)


def choose_memory_plan(height: int = 704, width: int = 1280, frames: int = 49, has_reference: bool = False,
                       guidance: bool = True, cfg_batch: int | None = None, device=None,
                       budget_bytes: int | None = None, lora_rank: int = 0, config=None,
                       clips_per_forward: int = 1) -> MemoryPlan:
    """The fastest option set whose estimated translation peak fits ``budget_bytes`` (default: the
    device's free memory now). ``guidance``: classifier-free guidance on (two forwards per step);
    ``cfg_batch``: 1 or 2 to fix how they run, None to choose. ``lora_rank``: unfused adapters
    (0: none or merged). ``clips_per_forward``: windows of a long clip stacked in one forward."""
    device = resolve_device(device)
    latent_frames, _, _ = latent_shape(frames, height, width)
    batches = _batches(guidance, cfg_batch)
    if device.type != "cuda":
        return MemoryPlan(device=str(device), cfg_batch=batches[0], text_encoder_device=str(device), attention="sdpa")
    budget_bytes = _budget(device, budget_bytes)
    usable = usable_bytes(budget_bytes)
    config = config or WAN22_5B_CONFIG
    layers = config_value(config, "num_layers")

    def peak_of(batch, resident, tiling, fp8):
        return translation_peaks(height, width, latent_frames, has_reference, batch * clips_per_forward,
                                 torch.bfloat16, compact_modulation=True, fp8=fp8, resident_blocks=resident,
                                 vae_tiling=tiling, text_encoder_on_device=False, lora_rank=lora_rank,
                                 config=config).peak

    batch, resident, tiling, fp8, peak, fits = _search(peak_of, batches, layers, usable)
    text_on_device = text_encoder_bytes(torch.bfloat16) <= usable
    return MemoryPlan(device=str(device), cfg_batch=batch, resident_blocks=resident, vae_tiling=tiling,
                      fp8_weights=fp8, text_encoder_device=str(device) if text_on_device else "cpu",
                      attention=choose_attention_backend(device, torch.bfloat16), estimated_peak_bytes=peak,
                      budget_bytes=budget_bytes, fits=fits)


def choose_sampling_plan(latent_frames: int, latent_height: int, latent_width: int, has_reference: bool,
                         guidance: bool = True, cfg_batch: int | None = None, device=None,
                         budget_bytes: int | None = None, lora_rank: int = 0, config=None) -> MemoryPlan:
    """Like choose_memory_plan for the sampling stage alone, from the latent grid the sampler gets
    (no VAE terms, no tiling, no fp8: the sampler node never casts weights)."""
    device = resolve_device(device)
    batches = _batches(guidance, cfg_batch)
    if device.type != "cuda":
        return MemoryPlan(device=str(device), cfg_batch=batches[0], text_encoder_device=str(device))
    budget_bytes = _budget(device, budget_bytes)
    usable = usable_bytes(budget_bytes)
    config = config or WAN22_5B_CONFIG
    layers = config_value(config, "num_layers")
    tokens = in_context_tokens(config, latent_frames, latent_height, latent_width, has_reference)

    def peak_of(batch, resident, _tiling, _fp8):
        return sampling_bytes(tokens, batch, torch.bfloat16, resident_blocks=resident, lora_rank=lora_rank,
                              config=config)

    batch, resident, _tiling, _fp8, peak, fits = _search(peak_of, batches, layers, usable, lossy=False)
    return MemoryPlan(device=str(device), cfg_batch=batch, resident_blocks=resident,
                      attention=choose_attention_backend(device, torch.bfloat16), estimated_peak_bytes=peak,
                      budget_bytes=budget_bytes, fits=fits)
