"""float8 weight storage with bf16 (or fp32) compute for the transformer: diffusers' layerwise
casting (``ModelMixin.enable_layerwise_casting``) stores every block linear in float8_e4m3fn and
casts it up to the compute dtype just for its own forward, so the weights take 1 byte per
parameter (5 GB instead of 10 GB for the 5B) at the cost of one cast per layer per forward.

Kept in full precision: what diffusers already skips (patch embedding, condition embedder, norms,
the float32 modules, the head ``proj_out``) and LoRA adapter weights (PEFT's lora_A / lora_B...),
which stay in the dtype they were loaded in. The cast is plain (no per-tensor scale): e4m3 keeps
3 mantissa bits, so each weight is rounded to within 1/16 of its magnitude (coarser below 2^-6,
where e4m3 is subnormal). The test bounds the effect on the tiny model's output.

fp8 matrix multiplies (torch._scaled_mm) are not used: compute stays in the compute dtype.
"""

from __future__ import annotations

import torch

from ..errors import InputError

FP8_STORAGE_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_EXTRA_SKIPS = ("^proj_out$",)


def _peft_adapter_names() -> tuple[str, ...]:
    try:
        from peft.tuners.loha.layer import LoHaLayer
        from peft.tuners.lokr.layer import LoKrLayer
        from peft.tuners.lora.layer import LoraLayer
    except ImportError:  # peft is a dependency, but layerwise casting itself does not need it
        return ()
    return tuple(name for layer in (LoraLayer, LoHaLayer, LoKrLayer) for name in layer.adapter_layer_names)


def fp8_storage_enabled(transformer) -> bool:
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            return True
    return False


def enable_fp8_storage(transformer, compute_dtype: torch.dtype | None = None,
                       storage_dtype: torch.dtype = torch.float8_e4m3fn, device=None) -> None:
    """Store the block linears in ``storage_dtype`` and compute in ``compute_dtype`` (default: the
    dtype of the block weights now, bf16 for a GPU-loaded model). Moves the model to ``device``
    afterwards when given, so a model loaded on the CPU never needs its bf16 size on the GPU."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    if storage_dtype not in FP8_STORAGE_DTYPES:
        raise InputError(f"storage_dtype: expected one of {FP8_STORAGE_DTYPES}, got {storage_dtype}.")
    if fp8_storage_enabled(transformer):
        raise InputError("fp8 storage: already enabled on this transformer.")
    if compute_dtype is None:
        compute_dtype = transformer.blocks[0].attn1.to_q.weight.dtype
    if not compute_dtype.is_floating_point or compute_dtype in FP8_STORAGE_DTYPES:
        raise InputError(f"compute_dtype: expected bf16, fp16 or fp32, got {compute_dtype}.")
    # Passing our own patterns turns off diffusers' automatic PEFT skip, so the adapter names are added here.
    skips = tuple(DEFAULT_SKIP_MODULES_PATTERN) + _EXTRA_SKIPS + _peft_adapter_names()
    transformer.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=compute_dtype,
                                         skip_modules_pattern=skips)
    if device is not None:
        transformer.to(device)

