"""Converting any LoRA file this package reads into one safetensors file that both diffusers and
ComfyUI load natively.

Output layout, original-Wan names: ``diffusion_model.<module>.lora_down.weight`` [rank, in],
``diffusion_model.<module>.lora_up.weight`` [out, rank] and ``diffusion_model.<module>.alpha``.
Checked against both loaders:

- ComfyUI (comfy/lora.py ``model_lora_keys_unet``): every model weight
  ``diffusion_model.X.weight`` is reachable as LoRA key ``diffusion_model.X``; comfy/weight_adapter
  reads ``X.lora_up.weight`` / ``X.lora_down.weight`` and ``X.alpha`` and adds
  ``strength * alpha / rank * up @ down``.
- diffusers (``WanLoraLoaderMixin.lora_state_dict``): keys starting ``diffusion_model.`` go through
  ``_convert_non_diffusers_wan_lora_to_diffusers``, which reads ``lora_down``/``lora_up`` and folds
  ``alpha / rank`` into the weights, but only for block modules: for the modules outside the blocks
  (``head.head``, ``time_projection.1``, ``text_embedding.*``, ``time_embedding.*``) an ``.alpha``
  key is left over and it raises. Those modules therefore get their scale folded into ``lora_down``
  here and carry no alpha (both loaders then use scale 1).

The same tensors, built in memory by ``original_wan_modules`` / ``original_wan_tensors``, are what
the native ComfyUI LoRA node hands to ComfyUI's own loader, so no file is written there.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic_files import atomic_path
from ..errors import InputError
from .layouts import LoraModule, LoraWeights, original_wan_module_name, read_lora_file

_PREFIX = "diffusion_model."


def original_wan_tensors(original: str, module) -> dict[str, torch.Tensor]:
    """The original-Wan ``lora_down``/``lora_up`` (/``alpha``) tensors of one module (see the module
    docstring for why modules outside the blocks carry their scale in ``lora_down``)."""
    down, up = module.down, module.up
    out = {}
    if original.startswith("blocks."):
        if module.alpha is not None:
            out[f"{_PREFIX}{original}.alpha"] = torch.tensor(float(module.alpha), dtype=torch.float32)
    elif module.alpha is not None and module.scale != 1.0:
        down = (down.float() * module.scale).to(down.dtype)
    out[f"{_PREFIX}{original}.lora_down.weight"] = down.detach().clone().contiguous()
    out[f"{_PREFIX}{original}.lora_up.weight"] = up.detach().clone().contiguous()
    return out


def original_wan_modules(weights: LoraWeights) -> tuple[dict[str, LoraModule], list[str]]:
    """The LoRA's modules by original-Wan name (``blocks.0.self_attn.q``), and the file keys left
    out: those that could not be read, and those of modules that have no original-Wan name."""
    modules, left_out = {}, list(weights.unrecognized)
    for name, module in weights.modules.items():
        original = original_wan_module_name(name)
        if original is None:
            left_out.extend(module.keys or (name,))
        else:
            modules[original] = module
    return modules, left_out


def convert_lora_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Read the LoRA ``src`` (any layout read_lora_file knows, .ckpt included) and write it to
    ``dst`` (.safetensors) in the original-Wan ``lora_down``/``lora_up``/``alpha`` layout, which
    diffusers' ``load_lora_weights`` and ComfyUI's LoRA loader both accept.

    Written atomically (temporary file in the same folder, then renamed). Keys that cannot be
    read, and modules with no original-Wan name, are named in a warning and left out.
    Returns the path written.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() != ".safetensors":
        raise InputError(f"output: {dst} does not end in .safetensors; expected a .safetensors path.")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError(f"output: {dst} is the input file; expected a different path.")
    if not dst.parent.is_dir():
        raise InputError(f"output: folder {dst.parent} does not exist; expected an existing folder.")

    weights = read_lora_file(src)
    modules, left_out = original_wan_modules(weights)
    tensors: dict[str, torch.Tensor] = {}
    for original, module in modules.items():
        tensors.update(original_wan_tensors(original, module))
    if left_out:
        warnings.warn(f"{src}: {len(left_out)} keys have no place in the Wan LoRA layout and were left out of "
                      f"{dst.name}: {', '.join(left_out)}", stacklevel=2)
    if not tensors:
        raise InputError(f"input: {src} has no LoRA module with an original-Wan name; nothing to write.")

    ranks = sorted({m.rank for m in weights.modules.values()})
    metadata = {
        "format": "pt",
        "wan_egoexo.content": "LoRA for Wan2.2 (WanTransformer3DModel)",
        "wan_egoexo.layout": "original-wan: diffusion_model.<module>.lora_down.weight / .lora_up.weight / .alpha",
        "wan_egoexo.converted_from": src.name,
        "wan_egoexo.source_layout": weights.layout,
        "wan_egoexo.modules": str(sum(k.endswith(".lora_down.weight") for k in tensors)),
        "wan_egoexo.ranks": json.dumps(ranks),
    }
    with atomic_path(dst) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return dst
