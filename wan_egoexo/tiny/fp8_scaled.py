"""Writing tensors in ComfyUI's fp8-scaled single-file layout (``wan_egoexo.models.fp8_scaled`` reads
it): the chosen weights as float8_e4m3fn with a float32 per-tensor ``scale_weight``, the rest in
another dtype, and the ``scaled_fp8`` marker, all under one key prefix."""

from __future__ import annotations

import torch

from ..models.fp8_scaled import FP8_MARKER, SCALE_INPUT_SUFFIX, SCALE_WEIGHT_SUFFIX

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_fp8_per_tensor(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn weight, float32 scalar scale) with scale = amax / 448."""
    weight = weight.float()
    amax = weight.abs().max()
    scale = amax / FP8_MAX if amax > 0 else torch.ones((), dtype=torch.float32)
    quantized = (weight / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return quantized, scale.reshape(()).to(torch.float32)


def fp8_scaled_tensors(tensors: dict[str, torch.Tensor], quantized: set[str], other_dtype=torch.float16,
                       with_scale_input: bool = False, prefix: str = "") -> dict[str, torch.Tensor]:
    """``tensors`` in the layout: each key in ``quantized`` (``<layer>.weight``) becomes fp8 with its
    ``<layer>.scale_weight`` (and, optionally, a ``<layer>.scale_input`` of 1), every other tensor is
    cast to ``other_dtype``; the marker goes under ``prefix`` as ComfyUI expects it."""
    out = {}
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        if key in quantized:
            stem = key[: -len(".weight")]
            out[prefix + key], out[prefix + stem + SCALE_WEIGHT_SUFFIX] = quantize_fp8_per_tensor(value)
            if with_scale_input:
                out[prefix + stem + SCALE_INPUT_SUFFIX] = torch.ones((), dtype=torch.float32)
        else:
            out[prefix + key] = value.to(other_dtype).contiguous()
    out[prefix + FP8_MARKER] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out
