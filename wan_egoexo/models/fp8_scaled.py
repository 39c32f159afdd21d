"""ComfyUI's fp8-scaled single-file layout (``*_fp8_scaled.safetensors``, ``*_fp8_e4m3fn_scaled``),
read by the transformer and the UMT5 loaders alike.

The layout, as ComfyUI reads it (``comfy/model_detection.py``, ``comfy/ops.py`` ``scaled_fp8_ops`` in
0.3.64; ``comfy/utils.py`` ``convert_old_quants`` in later hosts): a ``scaled_fp8`` marker tensor
(under the model's key prefix; its dtype names the fp8 format, and a 2-element marker asks for
full-precision matrix products), and beside each quantised weight ``<layer>.weight`` a float32
scalar ``<layer>.scale_weight``. The real weight is ``weight.float() * scale_weight`` (ComfyUI's
quantiser divides by the scale, its dequantiser multiplies). ``<layer>.scale_input`` scales the
activations for fp8 matrix products only; it does not change the weight, so it is ignored here.
A weight without a scale is read with scale 1, as ComfyUI does.
"""

from __future__ import annotations

import torch

from ..errors import ModelFileError
from .checkpoint_files import TensorInfo

FP8_MARKER = "scaled_fp8"
SCALE_WEIGHT_SUFFIX = ".scale_weight"
SCALE_INPUT_SUFFIX = ".scale_input"
_SCALE_DTYPES = ("F32", "F16", "BF16")


def is_layout_key(key: str) -> bool:
    """The marker and the input scales: tensors of the layout that hold no weight."""
    return key == FP8_MARKER or key.endswith(SCALE_INPUT_SUFFIX)


def is_scale_key(key: str) -> bool:
    return key.endswith(SCALE_WEIGHT_SUFFIX)


def weight_scales(keys) -> dict[str, str]:
    """``<layer>.weight`` -> ``<layer>.scale_weight`` for every scale among ``keys``."""
    return {key[: -len(SCALE_WEIGHT_SUFFIX)] + ".weight": key for key in keys if is_scale_key(key)}


def check_scales(path, header: dict[str, TensorInfo], scales: dict[str, str], weights) -> None:
    """Every scale sits beside a weight among ``weights`` and is one floating-point number (header only)."""
    weights = set(weights)
    stray = sorted(scale for weight, scale in scales.items() if weight not in weights)
    if stray:
        raise ModelFileError(path, f"has {len(stray)} scale_weight tensors with no weight of their layer beside "
                             f"them, e.g. {stray[:3]}.", "scale_weight only beside a quantised layer's weight")
    for scale in scales.values():
        info = header[scale]
        numel = 1
        for size in info.shape:
            numel *= size
        if info.dtype not in _SCALE_DTYPES or numel != 1:
            raise ModelFileError(path, f"tensor {scale!r} has dtype {info.dtype} and shape {tuple(info.shape)}.",
                                 "a per-tensor floating-point scale (one element)")


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The real weight in ``dtype``: ``weight.float() * scale`` rounded once (a plain cast without a
    scale). Deterministic, so a weight re-read from the file comes back bit for bit."""
    if scale is None:
        return weight.to(dtype)
    return (weight.float() * scale.to(device=weight.device, dtype=torch.float32).reshape(())).to(dtype)
