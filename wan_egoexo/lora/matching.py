"""Matching a LoRA file's modules to the linear layers of a transformer (shared by the unfused
PEFT adapters and the merged weights; imports no peft)."""

from __future__ import annotations

import warnings

import torch

from ..errors import ModelFileError
from .layouts import EXPECTED_LORA, LoraModule, LoraWeights


def match_lora_modules(transformer, weights: LoraWeights, unwrap=None) -> tuple[dict[str, LoraModule], list[str]]:
    """Split the LoRA's modules into those that land on a linear layer of the transformer and the
    file keys of the rest. A module that lands on a layer of another size means another model.
    ``unwrap`` maps a wrapped layer (a PEFT adapter layer) to its base layer."""
    layers = dict(transformer.named_modules())
    matched, unmatched_keys = {}, []
    for name, module in weights.modules.items():
        layer = layers.get(name)
        if unwrap is not None and layer is not None:
            layer = unwrap(layer)
        if not isinstance(layer, torch.nn.Linear):
            unmatched_keys.extend(module.keys or (name,))
            continue
        lora_shape = (module.up.shape[0], module.down.shape[1])
        if lora_shape != (layer.out_features, layer.in_features):
            raise ModelFileError(weights.source, f"its LoRA for {name} is {lora_shape[0]}x{lora_shape[1]} but that "
                                 f"layer of the transformer is {layer.out_features}x{layer.in_features}: the LoRA "
                                 "was made for a different model.", EXPECTED_LORA)
        matched[name] = module
    if not matched:
        raise ModelFileError(weights.source, f"none of its {len(weights.modules)} LoRA modules matches a linear layer "
                             f"of this transformer (for example {sorted(weights.modules)[:3]}).", EXPECTED_LORA)
    return matched, unmatched_keys


def warn_not_loaded(weights: LoraWeights, unmatched_keys: list[str], stacklevel: int = 3) -> None:
    if weights.unrecognized:
        warnings.warn(f"{weights.source}: {len(weights.unrecognized)} keys could not be read as LoRA weights and "
                      f"were not loaded: {', '.join(weights.unrecognized)}", stacklevel=stacklevel)
    if unmatched_keys:
        warnings.warn(f"{weights.source}: {len(unmatched_keys)} LoRA keys match no linear layer of this "
                      f"transformer and were not loaded: {', '.join(unmatched_keys)}", stacklevel=stacklevel)
