"""The trainable LoRA: adding it to the transformer (PEFT, as the authors: ``init_lora_weights=True``
so B = 0, parameters in float32) and writing it as a LoRA file that ``wan_egoexo.lora.apply_lora``,
the ComfyUI nodes and ComfyUI's own LoRA loader all read.

The file is written by the core's ``convert_lora_file`` (original-Wan ``lora_down`` / ``lora_up`` /
``alpha`` names): the PEFT tensors go first into a temporary safetensors that carries the rank and
alpha as diffusers' ``lora_adapter_metadata``, and the converter writes the final file atomically.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from wan_egoexo.errors import InputError
from wan_egoexo.lora import convert_lora_file

ADAPTER_NAME = "default"
_SAVE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_training_lora(transformer, rank: int, alpha: float, target_modules, seed: int) -> list[torch.nn.Parameter]:
    """Add one LoRA adapter (A random with the seed, B = 0) and return its parameters, float32 and
    trainable; every other parameter stays frozen. The global RNG is left as it was."""
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=list(target_modules),
                        lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
        except ValueError as exc:
            raise InputError(f"lora.target_modules: {list(target_modules)} cannot be adapted ({exc}); expected "
                             "linear layer names such as to_q, to_k, to_v, to_out.0, ffn.net.0.proj, ffn.net.2.") from None
    params = []
    for name, param in transformer.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        if is_lora:
            param.data = param.data.float()
        param.requires_grad_(is_lora)
        if is_lora:
            params.append(param)
    if not params:
        raise InputError(f"lora.target_modules: {list(target_modules)} match no linear layer of the transformer.")
    return params


def save_lora_file(state: dict[str, torch.Tensor], path, rank: int, alpha: float, dtype: str = "fp32") -> Path:
    """Write PEFT-named LoRA tensors (``blocks.0.attn1.to_q.lora_A.default.weight`` ...) as a ComfyUI /
    diffusers / apply_lora LoRA file at ``path`` (.safetensors), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu", _SAVE_DTYPES[dtype]).contiguous() for key, value in state.items()}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({"r": int(rank), "lora_alpha": float(alpha)})}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".lora-peft-") as work:
        peft_file = Path(work) / "trained_lora_peft.safetensors"
        save_file(tensors, str(peft_file), metadata=metadata)
        return convert_lora_file(peft_file, path)
