"""Device and dtype defaults: bf16 on GPU, fp32 on CPU, and parsing of user dtype strings."""

from __future__ import annotations

import os

import torch

from .errors import InputError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


def default_device() -> torch.device:
    """The CUDA device of this process (torchrun's LOCAL_RANK, else the first) when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch.device; "cuda" gets the index of the current CUDA device, so that it compares equal to
    the devices tensors report (``tensor.device == torch.device("cuda")`` is False)."""
    if device is None or device == "auto":
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device: {device!r} is not a device; expected 'cpu', 'cuda', 'cuda:N' or 'auto'.") from exc
    if resolved.type == "cuda" and resolved.index is None and torch.cuda.is_available():
        try:
            return torch.device("cuda", torch.cuda.current_device())
        except (RuntimeError, AssertionError):  # CUDA that cannot start here: the name is all there is
            return resolved
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on accelerators and fp32 on the CPU unless the caller asks otherwise."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InputError(f"dtype: {dtype!r} is not supported; expected one of {sorted(set(_DTYPES))} or 'auto'.") from None
