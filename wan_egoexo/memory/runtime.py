"""Memory options for hosts that change the LoRA chain between runs (the ComfyUI sampler).

Block offloading wraps the modules that exist when it is enabled, so adapters must not be added
or removed under it: the chain is made active with offloading off (weights on the CPU), then
offloading is switched back on. Strength changes alone touch no module and keep it on.
"""

from __future__ import annotations

from .auto import choose_memory_plan
from .offload import block_offload_enabled, disable_block_offload, enable_block_offload

MEMORY_MODES = ("auto", "resident", "offload")


def wants_offload(mode: str, device, height: int = 704, width: int = 1280, frames: int = 49) -> bool:
    """Whether a run at this size should offload blocks: "auto" asks the memory model about the free
    memory of ``device`` (never on the CPU); "resident" / "offload" say it outright."""
    if mode == "auto":
        return choose_memory_plan(height, width, frames, device=device).block_offload
    return mode == "offload"


def prepare_for_sampling(transformer, loras, offload: bool, device) -> None:
    """Make ``loras`` ([(path, strength)]) exactly the active LoRAs and set block offloading on or off."""
    from ..lora import activate_loras, active_loras, adapter_name_for  # noqa: PLC0415  (imports peft)

    wanted = {adapter_name_for(path) for path, _ in loras}
    if block_offload_enabled(transformer) and (wanted != set(active_loras(transformer)) or not offload):
        disable_block_offload(transformer, "cpu" if offload else device)
    activate_loras(transformer, loras)
    if offload and not block_offload_enabled(transformer):
        enable_block_offload(transformer, device)
