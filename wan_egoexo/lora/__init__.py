"""LoRA support: reading every common LoRA layout (and WorldWander .ckpt files, safely), applying
LoRAs to a diffusers Wan transformer as unfused, stackable PEFT adapters or merged into the base
weights (restored bit for bit when the chain changes), and converting files to a layout diffusers
and ComfyUI both load.

Names are imported on first use: the merged path and the file readers do not load the PEFT
adapter code (adapters.py).
"""

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "LoraModule": "layouts",
    "LoraWeights": "layouts",
    "normalize_lora_state_dict": "layouts",
    "original_wan_module_name": "layouts",
    "read_lora_file": "layouts",
    "load_checkpoint_tensors": "safe_checkpoint",
    "convert_lora_file": "convert",
    "active_loras": "adapters",
    "apply_lora": "adapters",
    "apply_lora_weights": "adapters",
    "remove_loras": "adapters",
    "set_lora_strength": "adapters",
    "activate_loras": "stack",
    "adapter_name_for": "stack",
    "lora_chain": "stack",
    "merge_loras": "merge",
    "merged_loras": "merge",
    "restore_base_weights": "merge",
    "set_merged_loras": "merge",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
