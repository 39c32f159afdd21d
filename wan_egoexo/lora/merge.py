"""Merged LoRAs: each adapted weight becomes W + sum_i strength_i * (alpha_i / rank_i) * up_i @ down_i,
summed in float32 on the compute device and rounded once into the weight's dtype, in place. A
merged transformer is a plain transformer: no adapter layers, no extra matrix products per token,
and peft is never imported. For runs whose LoRA chain is fixed (the CLI) or unchanged since the
last run (the sampler node); unfused adapters (``adapters.py``) stay available for chains that
change often, and for training.

Putting the base weights back when the chain changes is bit-exact. The backup is the model file
itself when the transformer was loaded from one (``wan_egoexo.models.weight_source``): the touched tensors
are read again through safetensors' memory map and cast as the loader cast them, so it costs no
memory, only reading them (for the WorldWander LoRA, the ten linears of every block: 4.9 G
parameters, 9.8 GB of the 5B's fp16 file, from the page cache or the disk). A transformer built in
memory has no file: its touched weights are copied to CPU memory before the first merge, at their
size. Weights are edited in place (``.data.copy_``), so block offloading's CPU copies follow.
Before a file is read back it is verified: its stamp (size, mtime, inode, device, ctime) and a few
rows of every touched tensor, sampled from memory before the merge (2 KB or less each), against the
same rows read from the file; a file replaced since loading (``cp -p``, ``rsync -t``) is refused by
name before any weight is written back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InputError, NonFiniteError
from ..finite_checks import all_finite
from ..models.weight_source import read_original, sample_weight, verify_originals, weight_source
from .layouts import read_lora_file
from .matching import match_lora_modules, warn_not_loaded
from .stack import lora_chain

_STATE_ATTR = "_wan_egoexo_merged_loras"


@dataclass
class _MergedState:
    chain: dict[str, float] = field(default_factory=dict)  # adapter name -> strength, in merge order
    touched: list[str] = field(default_factory=list)  # parameter names changed in place
    backup: dict[str, torch.Tensor] = field(default_factory=dict)  # CPU copies, when there is no file
    # a few rows of each weight read back from its file, as they were before the merge (weight_source)
    samples: dict[str, torch.Tensor] = field(default_factory=dict)


def merged_loras(transformer) -> dict[str, float]:
    """The merged chain: adapter name (``stack.adapter_name_for``) -> strength; empty when unmerged."""
    state = transformer.__dict__.get(_STATE_ATTR)
    return dict(state.chain) if state is not None else {}


def _check_plain(transformer, action: str) -> None:
    if getattr(transformer, "peft_config", None):
        raise InputError(f"LoRA: cannot {action} while unfused LoRA adapters are applied "
                         f"({sorted(transformer.peft_config)}); remove them first (remove_loras).")
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            raise InputError(f"LoRA: cannot {action} on a transformer with fp8 weight storage; merge before "
                             "enabling it (the CLI does), or load the model again.")


def _compute_device(transformer, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    from ..memory.offload import execution_device  # noqa: PLC0415

    return execution_device(transformer)


def merge_loras(transformer, loras, device=None) -> list[str]:
    """Merge ``loras`` ([(path, strength)]; a file listed twice adds its strengths) into the base
    weights of an unmerged transformer. All or nothing: every file is read and matched before a
    weight changes, and a failure half-way puts the base weights back. Returns the adapter names.
    ``device``: where the products are computed (default: where the transformer computes)."""
    _check_plain(transformer, "merge LoRAs")
    if merged_loras(transformer):
        raise InputError("LoRA: this transformer already has merged LoRAs; restore_base_weights first "
                         "(or use set_merged_loras).")
    chain = lora_chain(loras)
    per_layer: dict[str, list] = {}
    for name, (path, strength) in chain.items():
        weights = read_lora_file(path)
        _require_finite_lora(weights)
        matched, unmatched = match_lora_modules(transformer, weights)
        warn_not_loaded(weights, unmatched)
        if strength != 0.0:
            for layer, module in matched.items():
                per_layer.setdefault(layer, []).append((strength * module.scale, module))
    state = _MergedState(chain={name: strength for name, (_path, strength) in chain.items()})
    transformer.__dict__[_STATE_ATTR] = state
    layers = dict(transformer.named_modules())
    source = weight_source(transformer)
    compute = _compute_device(transformer, device)
    finite = torch.ones((), dtype=torch.bool, device=compute)
    try:
        with torch.no_grad():
            for layer_name, terms in per_layer.items():
                name = f"{layer_name}.weight"
                weight = layers[layer_name].weight.data
                if source is None or name not in source.keys:
                    state.backup[name] = weight.to("cpu", copy=True)
                else:
                    state.samples[name] = sample_weight(weight)
                state.touched.append(name)
                total = weight.to(compute, torch.float32, copy=True)
                for factor, module in terms:
                    up, down = module.up.to(compute, torch.float32), module.down.to(compute, torch.float32)
                    total.addmm_(up, down, alpha=factor)
                merged = total.to(weight.dtype)  # one rounding into the weight's dtype
                # checked where it was computed (an offloaded weight is in CPU memory, where checking
                # every merged weight costs seconds), read once at the end: no sync per layer
                finite &= all_finite(merged)
                weight.copy_(merged)  # in place
        if not bool(finite):
            raise NonFiniteError(_merge_failure(transformer, state, weight.dtype))
    except BaseException:
        restore_base_weights(transformer)
        raise
    return list(chain)


def _require_finite_lora(weights) -> None:
    """A LoRA file with NaN/Inf is refused before anything is merged, naming the file and a key."""
    for module in weights.modules.values():
        if not (bool(all_finite(module.down)) and bool(all_finite(module.up))):
            key = module.keys[0] if module.keys else "?"
            raise NonFiniteError(f"the LoRA {weights.source} has NaN/Inf weights ({key}): the LoRA file is damaged "
                                 "(or was saved from a diverged training run); nothing was merged.")


def _merge_failure(transformer, state: _MergedState, dtype) -> str:
    """Why merged weights came out non-finite (judged on this rare path only): a damaged base weight,
    or a product too large for the weights' dtype."""
    parameters = dict(transformer.named_parameters())
    source = weight_source(transformer)
    for name in state.touched:
        if not bool(all_finite(_original(state, source, name, parameters[name].data))):
            return (f"the transformer's weights hold NaN/Inf ({name}): the model file is damaged; download it "
                    "again. No LoRA was merged.")
    chain = ", ".join(f"{name} at strength {strength:g}" for name, strength in state.chain.items())
    return (f"LoRA: merging {chain} overflows the {dtype} weights to Inf; lower the strength. The base weights "
            "were restored.")


def _original(state: _MergedState, source, name: str, weight: torch.Tensor) -> torch.Tensor:
    """Weight ``name`` as it was before the merge: its CPU copy, else read again from the model file."""
    original = state.backup.get(name)
    return original if original is not None else read_original(source, name, weight)


def restore_base_weights(transformer) -> None:
    """Put every weight a merge changed back, bit for bit (from the model file, else the CPU copy).
    The model file is verified first (its stamp, and sampled rows of every tensor to be read against
    the weights before the merge): a file replaced since loading is refused by name before any
    weight is written, and the merged state is kept, so every later restore refuses it too."""
    state = transformer.__dict__.get(_STATE_ATTR)
    if state is None:
        return
    source = weight_source(transformer)
    parameters = dict(transformer.named_parameters())
    if state.samples:
        verify_originals(source, state.samples, {name: parameters[name].data for name in state.samples})
    with torch.no_grad():
        for name in state.touched:
            weight = parameters[name].data
            weight.copy_(_original(state, source, name, weight))
    del transformer.__dict__[_STATE_ATTR]


def set_merged_loras(transformer, loras, device=None) -> bool:
    """Make ``loras`` exactly the merged chain: nothing happens when it already is (same files,
    same strengths), else the base weights are restored and the new chain merged. Returns whether
    the weights changed."""
    wanted = {name: strength for name, (_path, strength) in lora_chain(loras).items()}
    if merged_loras(transformer) == wanted:
        return False
    restore_base_weights(transformer)
    if wanted:
        merge_loras(transformer, loras, device)
    return True
