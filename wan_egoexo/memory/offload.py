"""Transformer block offloading: the 30 blocks live in CPU memory (or on disk) and are copied to
the GPU one group at a time, the next group on a side CUDA stream while the current one computes.

This is diffusers' group offloading (``ModelMixin.enable_group_offload``, block level), reused
as is. The modules outside the blocks (patch embedding, embedders, rotary tables, head) form one
more group, loaded for the whole forward. With one block per group and streams, two blocks are
resident at a time: about 0.7 GB of the 10 GB of bf16 weights.

Order of set-up: load on the CPU, apply LoRAs, enable compact modulation and fp8 storage, then
this, then compile. While offloading is on, the transformer's parameters are on the CPU between
forwards, so callers must place inputs on ``execution_device(transformer)``, not on the device of
a parameter.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry

from ..devices import resolve_device
from ..errors import InputError

_OFFLOAD_HOOKS = ("group_offloading", "lazy_prefetch_group_offloading", "layer_execution_tracker")


def _top_level_offload_hook(transformer):
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if hook is not None:
            return hook
    return None


def block_offload_enabled(transformer) -> bool:
    return _top_level_offload_hook(transformer) is not None


def execution_device(transformer) -> torch.device:
    """Where the transformer computes: the onload device when offloading, else its parameters' device."""
    hook = _top_level_offload_hook(transformer)
    if hook is not None:
        return torch.device(hook.config.onload_device)
    return transformer.patch_embedding.weight.device


def enable_block_offload(transformer, device=None, blocks_per_group: int = 1, use_stream: bool | None = None,
                         disk_path=None, low_cpu_mem_usage: bool = False) -> None:
    """Keep the blocks off the device and stream them in ahead of use.

    device: the compute device (default: the first GPU). On a CPU-only machine offloading only
    makes sense to disk (``disk_path``, a folder diffusers writes one safetensors per group into).
    use_stream: prefetch the next group on a CUDA stream (default: on for CUDA; forces one block
    per group). low_cpu_mem_usage: pin CPU memory per transfer instead of keeping a pinned copy of
    all weights (less RAM, slower).
    """
    device = resolve_device(device)
    if not isinstance(blocks_per_group, int) or blocks_per_group < 1:
        raise InputError(f"blocks_per_group: expected an integer >= 1, got {blocks_per_group!r}.")
    if device.type == "cpu" and disk_path is None:
        raise InputError("block offload: the compute device is the CPU, where offloading to the CPU saves nothing; "
                         "give a CUDA device, or disk_path to offload to disk.")
    if block_offload_enabled(transformer):
        raise InputError("block offload: already enabled on this transformer (disable_block_offload first).")
    streams = device.type == "cuda" if use_stream is None else bool(use_stream)
    if streams and device.type != "cuda":
        raise InputError(f"block offload: CUDA streams need a CUDA device, not {device}.")
    transformer.enable_group_offload(
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1 if streams else blocks_per_group,
        non_blocking=streams,
        use_stream=streams,
        record_stream=streams,
        low_cpu_mem_usage=low_cpu_mem_usage,
        offload_to_disk_path=None if disk_path is None else str(disk_path),
    )


def disable_block_offload(transformer, device=None) -> None:
    """Remove the offload hooks and put every weight on ``device`` (default: the onload device)."""
    hook = _top_level_offload_hook(transformer)
    if hook is None:
        return
    target = resolve_device(device) if device is not None else torch.device(hook.config.onload_device)
    # Onload every group first: with disk offloading the weights are only in the group files.
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        group_hook = registry.get_hook("group_offloading") if registry is not None else None
        if group_hook is not None and group_hook.group.onload_leader is module:
            group_hook.group.onload_()
            if group_hook.group.stream is not None:
                group_hook.group.stream.synchronize()
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in _OFFLOAD_HOOKS:
        registry.remove_hook(name, recurse=True)
    transformer.to(target)
