"""Choosing the attention kernel: flash-attention 3 on Hopper GPUs when its package is installed,
flash-attention 2 on Ampere or newer when installed, else PyTorch's scaled-dot-product attention
(which itself dispatches to its flash / memory-efficient kernels on the GPU and to a fused kernel
on the CPU). The names are diffusers' attention backend names, applied with
``wan_egoexo.models.transformer_loader.set_attention_backend``. Flash kernels need bf16 or fp16.
"""

from __future__ import annotations

import torch

from ..devices import resolve_device

# Every backend name ``transformer_loader.set_attention_backend`` accepts (the Model Loader's menu).
ATTENTION_BACKENDS = ("sdpa", "flash", "flash_hub", "_flash_3", "sage", "native")
SDPA = "sdpa"
FLASH_2 = "flash"
FLASH_3 = "_flash_3"
_FLASH_DTYPES = (torch.bfloat16, torch.float16)


def _packages() -> tuple[bool, bool]:
    from diffusers.utils import is_flash_attn_3_available, is_flash_attn_available

    return bool(is_flash_attn_available()), bool(is_flash_attn_3_available())


def available_attention_backends(device=None, dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Usable backends on ``device`` for ``dtype``, fastest first; "sdpa" is always last."""
    device = resolve_device(device)
    found = []
    if device.type == "cuda" and torch.cuda.is_available() and dtype in _FLASH_DTYPES:
        major, _minor = torch.cuda.get_device_capability(device)
        has_flash_2, has_flash_3 = _packages()
        if has_flash_3 and major == 9:  # FA3 kernels are built for Hopper (sm90)
            found.append(FLASH_3)
        if has_flash_2 and major >= 8:
            found.append(FLASH_2)
    return found + [SDPA]


def choose_attention_backend(device=None, dtype: torch.dtype = torch.bfloat16) -> str:
    """The fastest backend ``available_attention_backends`` lists."""
    return available_attention_backends(device, dtype)[0]
