"""Applying LoRAs to a diffusers ``WanTransformer3DModel`` as unfused PEFT adapters: add (all or
nothing), stack with per-LoRA strengths, change a strength, remove.

The base weights are never written: PEFT wraps each adapted ``nn.Linear`` and adds
``strength * (alpha / rank) * up @ down @ x`` beside it. Removing the last adapter of a layer puts
the original ``nn.Linear`` (the same object, same parameters) back, so removing every LoRA leaves
the model exactly as it was. Per-module ranks and alphas go into PEFT's ``rank_pattern`` /
``alpha_pattern``; the strength is PEFT's per-adapter scale (``set_scale``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from ..errors import InputError, ModelFileError
from ..option_ranges import check_lora_strength
from .layouts import EXPECTED_LORA, LoraModule, LoraWeights, read_lora_file
from .matching import match_lora_modules, warn_not_loaded

# Strength of each adapter added here, kept on the transformer (removed with the last adapter).
_STRENGTHS_ATTR = "_wan_egoexo_lora_strengths"
# PEFT warns about these on every second adapter / deletion; they describe exactly what we intend.
_EXPECTED_PEFT_WARNINGS = ("Already found a `peft_config` attribute", "Adapter .* was active which is now deleted")


@contextlib.contextmanager
def _quiet_expected_peft_warnings():
    with warnings.catch_warnings():
        for message in _EXPECTED_PEFT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def _strengths(transformer) -> dict[str, float]:
    """The recorded strengths (a fresh empty dict, not stored, when there are none)."""
    return transformer.__dict__.get(_STRENGTHS_ATTR, {})


def _record_strength(transformer, name: str, strength: float) -> None:
    transformer.__dict__.setdefault(_STRENGTHS_ATTR, {})[name] = strength


def _adapter_names(transformer) -> list[str]:
    return [name for name, config in getattr(transformer, "peft_config", {}).items() if isinstance(config, LoraConfig)]


def _unique_name(transformer, source: str, name: str | None) -> str:
    taken = set(getattr(transformer, "peft_config", {}))
    if name is not None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise InputError(f"name: {name!r} is not a valid adapter name; expected letters, digits, '_' or '-'.")
        if name in taken:
            raise InputError(f"name: a LoRA named {name!r} is already applied; expected a new name "
                             f"(applied: {sorted(taken)}).")
        return name
    # PEFT keeps adapters in ModuleDicts, whose keys may not contain '.'.
    base = re.sub(r"[^A-Za-z0-9_\-]+", "_", Path(source).stem).strip("_") or "lora"
    candidate, counter = base, 1
    while candidate in taken:
        counter += 1
        candidate = f"{base}_{counter}"
    return candidate


def _base_layer(layer):
    return layer.get_base_layer() if isinstance(layer, BaseTunerLayer) else layer


def _lora_config(modules: dict[str, LoraModule]) -> LoraConfig:
    """A LoraConfig targeting exactly these modules, with their own ranks and alphas."""
    ranks = {name: m.rank for name, m in modules.items()}
    alphas = {name: m.effective_alpha for name, m in modules.items()}
    rank = collections.Counter(ranks.values()).most_common(1)[0][0]
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    # Pattern keys are regular expressions matched against the module name's tail: escape the names.
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(modules),
        rank_pattern={re.escape(n): r for n, r in ranks.items() if r != rank},
        alpha_pattern={re.escape(n): a for n, a in alphas.items() if a != alpha},
        lora_dropout=0.0,
        init_lora_weights=False,  # every weight is overwritten right after
    )


def _peft_state_dict(modules: dict[str, LoraModule]) -> dict[str, torch.Tensor]:
    state = {}
    for name, module in modules.items():
        state[f"{name}.lora_A.weight"] = module.down
        state[f"{name}.lora_B.weight"] = module.up
    return state


def _activate(transformer) -> None:
    """Make the active adapters and their scales match the recorded strengths (a LoRA at strength 0
    is left inactive, so it costs nothing)."""
    strengths = _strengths(transformer)
    active = [name for name in _adapter_names(transformer) if strengths.get(name, 1.0) != 0.0]
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(active, inference_mode=True)
            for name in active:
                if hasattr(module, "set_scale"):  # LoRA layers; other PEFT tuners have no scale
                    module.set_scale(name, strengths.get(name, 1.0))


def _unwrap_empty_layers(transformer) -> None:
    # Written here rather than diffusers' recurse_remove_peft_layers: that one unwraps every PEFT
    # layer, including layers that still hold another LoRA.
    for parent in list(transformer.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer) and not any(len(getattr(child, a)) for a in child.adapter_layer_names):
                setattr(parent, child_name, child.get_base_layer())


def _delete_adapters(transformer, names) -> None:
    names = set(names)
    with _quiet_expected_peft_warnings():
        for module in list(transformer.modules()):
            if isinstance(module, BaseTunerLayer):
                for name in names:
                    if any(name in getattr(module, a) for a in module.adapter_layer_names + module.other_param_names):
                        module.delete_adapter(name)
    config = getattr(transformer, "peft_config", {})
    for name in names:
        config.pop(name, None)
        _strengths(transformer).pop(name, None)
    _unwrap_empty_layers(transformer)
    if not config:
        for attr in ("peft_config", "_hf_peft_config_loaded", _STRENGTHS_ATTR):
            transformer.__dict__.pop(attr, None)


def apply_lora_weights(transformer, weights: LoraWeights, strength: float = 1.0, name: str | None = None) -> str:
    """Add already-read LoRA weights as a new unfused adapter; see apply_lora."""
    strength = check_lora_strength(strength)
    name = _unique_name(transformer, weights.source, name)
    matched, unmatched_keys = match_lora_modules(transformer, weights, _base_layer)
    warn_not_loaded(weights, unmatched_keys)

    requires_grad = {p: p.requires_grad for p in transformer.parameters()}
    try:
        with _quiet_expected_peft_warnings():
            inject_adapter_in_model(_lora_config(matched), transformer, adapter_name=name)
        result = set_peft_model_state_dict(transformer, _peft_state_dict(matched), adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if ".lora_" in k]
        missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k and ".lora_" in k]
        if unexpected or missing:
            raise ModelFileError(weights.source, f"PEFT did not take every LoRA weight (unexpected: {unexpected}, "
                                 f"missing: {missing}).", EXPECTED_LORA)
        transformer._hf_peft_config_loaded = True  # lets diffusers' own adapter methods see the adapters
        _record_strength(transformer, name, strength)
        _activate(transformer)
    except BaseException:
        _delete_adapters(transformer, [name])
        _activate(transformer)
        raise
    finally:
        # PEFT freezes every base parameter when it injects; put the caller's flags back.
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)
    return name


def apply_lora(transformer, path: str | os.PathLike, strength: float = 1.0, name: str | None = None) -> str:
    """Add the LoRA file ``path`` (any layout read_lora_file knows) to ``transformer`` as an
    unfused PEFT adapter at ``strength``, stacking with LoRAs already applied.

    Returns the adapter name: ``name``, or the file stem made unique. Keys the file holds that
    cannot be used are named in a warning; the rest load. All or nothing: on any error the
    transformer is left as it was. Raises ModelFileError for a file with no usable LoRA, or one
    made for a model with other layer sizes; InputError for a bad strength or a name in use.
    """
    return apply_lora_weights(transformer, read_lora_file(path), strength=strength, name=name)


def _require_applied(transformer, names) -> list[str]:
    applied = _adapter_names(transformer)
    unknown = [n for n in names if n not in applied]
    if unknown:
        raise InputError(f"name: no LoRA named {', '.join(map(repr, unknown))} is applied; expected one of {applied}.")
    return list(names)


def set_lora_strength(transformer, name: str, strength: float) -> None:
    """Change the strength of the applied LoRA ``name`` (0 switches it off without removing it)."""
    strength = check_lora_strength(strength)
    _require_applied(transformer, [name])
    _record_strength(transformer, name, strength)
    _activate(transformer)


def remove_loras(transformer, names=None) -> None:
    """Remove the named LoRAs (a name or a list; None removes all). The base weights were never
    changed, and layers left without any LoRA get their original module back."""
    if names is None:
        names = _adapter_names(transformer)
    elif isinstance(names, str):
        names = [names]
    names = _require_applied(transformer, list(names))
    if names:
        _delete_adapters(transformer, names)
        _activate(transformer)


def active_loras(transformer) -> dict[str, float]:
    """Applied LoRAs and their strengths, in the order they were added."""
    strengths = _strengths(transformer)
    return {name: strengths.get(name, 1.0) for name in _adapter_names(transformer)}
