"""LoRA support: reading every common LoRA layout (and WorldWander .ckpt files, safely), applying
LoRAs to a diffusers Wan transformer as unfused, stackable PEFT adapters, and converting files to a
layout diffusers and ComfyUI both load."""

from .adapters import active_loras, apply_lora, apply_lora_weights, remove_loras, set_lora_strength
from .convert import convert_lora_file
from .layouts import LoraModule, LoraWeights, normalize_lora_state_dict, original_wan_module_name, read_lora_file
from .safe_checkpoint import load_checkpoint_tensors
from .stack import activate_loras, adapter_name_for

__all__ = [
    "LoraModule",
    "LoraWeights",
    "activate_loras",
    "active_loras",
    "adapter_name_for",
    "apply_lora",
    "apply_lora_weights",
    "convert_lora_file",
    "load_checkpoint_tensors",
    "normalize_lora_state_dict",
    "original_wan_module_name",
    "read_lora_file",
    "remove_loras",
    "set_lora_strength",
]
