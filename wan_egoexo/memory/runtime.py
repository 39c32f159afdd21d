"""Memory and LoRA set-up for hosts that sample one clip after another with a LoRA chain that may
change between runs (the ComfyUI sampler): plan for the clip actually being sampled, make the chain
active (merged into the weights, or as unfused adapters), and keep as many blocks resident as the
plan says.

Unfused adapters add modules, which block offloading would not see, so the chain is changed with
offloading off and offloading is switched back on afterwards. Merged chains are changed in place,
offloaded or not. The choices the nodes list are in choices.py.
"""

from __future__ import annotations

import dataclasses

import torch

from ..devices import resolve_device
from ..errors import InputError
from .auto import UNFUSED_RANK_GUESS, MemoryPlan, choose_sampling_plan, free_device_memory
from .choices import CFG_BATCH_MODES, LORA_MODES, MEMORY_MODES
from .offload import block_offload_enabled, disable_block_offload, enable_block_offload, resident_blocks


def cfg_batch_of(mode: str) -> int | None:
    """The sampler's cfg_batch choice as sample_target's argument (None: the plan chooses)."""
    return {"auto": None, "batched": 2, "sequential": 1}[mode]


def device_bytes(module, device) -> int:
    """Bytes of ``module``'s parameters and buffers on ``device`` now (freed if they move away)."""
    device = resolve_device(device)
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]
               if t.device == device)


def plan_sampling(transformer, mode: str, device, latent_frames: int, latent_height: int, latent_width: int,
                  has_reference: bool, guidance: bool, cfg_batch: int | None = None,
                  lora_mode: str = "merged", loras=()) -> MemoryPlan:
    """The memory plan for sampling this clip: ``mode`` "auto" asks the memory model about the free
    memory of ``device`` (counting what this transformer holds there now, which offloading would
    free); "resident" keeps every block on the device, "offload" streams every block."""
    device = resolve_device(device)
    budget = None
    if device.type == "cuda" and torch.cuda.is_available():
        budget = free_device_memory(device) + device_bytes(transformer, device)
    rank = UNFUSED_RANK_GUESS if lora_mode == "unfused" and loras else 0
    plan = choose_sampling_plan(latent_frames, latent_height, latent_width, has_reference, guidance, cfg_batch,
                                device, budget, rank, dict(transformer.config))
    if mode == "resident" or device.type != "cuda":
        return dataclasses.replace(plan, resident_blocks=None)
    if mode == "offload":
        return dataclasses.replace(plan, resident_blocks=0)
    return plan


def prepare_for_sampling(transformer, loras, resident: int | None, device, lora_mode: str = "merged",
                         park=None) -> None:
    """Make ``loras`` ([(path, strength)]) exactly the active chain, merged into the weights or as
    unfused adapters, and keep ``resident`` blocks on ``device``, the others streamed. With
    ``resident`` None nothing is streamed and the transformer is left where it is for the caller to
    place (the CLI loaded it on the device; ComfyUI's model management moves the node's); switching
    offloading off puts it on ``park`` (default: ``device``)."""
    from ..lora import merged_loras, restore_base_weights, set_merged_loras  # noqa: PLC0415

    device = resolve_device(device)
    loras = list(loras)
    unfused = lora_mode == "unfused"
    adapters = set(getattr(transformer, "peft_config", {}) or {})
    if unfused:
        from ..lora import adapter_name_for  # noqa: PLC0415

        adapters_change = adapters != {adapter_name_for(path) for path, _ in loras} or bool(merged_loras(transformer))
    else:
        adapters_change = bool(adapters)
    if block_offload_enabled(transformer):
        moved = transformer.patch_embedding.weight.device != device  # a host moved the whole module since
        if adapters_change or moved or resident != resident_blocks(transformer) or resident is None:
            disable_block_offload(transformer, (park or device) if resident is None else "cpu")
    if unfused:
        from ..lora import activate_loras  # noqa: PLC0415  (imports peft)

        restore_base_weights(transformer)
        activate_loras(transformer, loras)
    else:
        if adapters:
            from ..lora import activate_loras  # noqa: PLC0415  (imports peft)

            activate_loras(transformer, [])
        set_merged_loras(transformer, loras, device)
    if resident is not None and not block_offload_enabled(transformer):
        enable_block_offload(transformer, device, resident)


def prepare_sampler_run(transformer, loras, memory_mode: str, device, latent_grid, has_reference: bool,
                        guidance: bool, cfg_batch: str = "auto", lora_mode: str = "merged", park=None,
                        release=None) -> MemoryPlan:
    """The sampler node's set-up in one call: check its choices, plan for this clip's latent grid
    (frames of one window, height, width) and make the LoRA chain and resident blocks match the plan
    (``park``: see prepare_for_sampling). ``release(transformer)`` is called before blocks are
    streamed, so that a host that manages the module's placement lets go of it first. Returns the
    plan (its cfg_batch is how guidance must run)."""
    if cfg_batch not in CFG_BATCH_MODES or lora_mode not in LORA_MODES or memory_mode not in MEMORY_MODES:
        raise InputError(f"cfg_batch / lora_mode / memory: expected one of {CFG_BATCH_MODES} / {LORA_MODES} / "
                         f"{MEMORY_MODES}, got {cfg_batch!r} / {lora_mode!r} / {memory_mode!r}.")
    plan = plan_sampling(transformer, memory_mode, device, *latent_grid, has_reference, guidance=guidance,
                         cfg_batch=cfg_batch_of(cfg_batch), lora_mode=lora_mode, loras=loras)
    if plan.resident_blocks is not None and release is not None:
        release(transformer)
    prepare_for_sampling(transformer, loras, plan.resident_blocks, device, lora_mode, park)
    return plan


def wants_vae_tiling(device, height: int = 704, width: int = 1280, dtype=torch.bfloat16) -> bool:
    """Whether an untiled VAE decode at this size would not fit the free memory of ``device`` now
    (never on the CPU)."""
    from .auto import usable_bytes  # noqa: PLC0415
    from .footprint import vae_activation_bytes  # noqa: PLC0415

    free = free_device_memory(device)
    return free is not None and vae_activation_bytes(height, width, 49, dtype, decode=True) > usable_bytes(free)
