"""LoRA file layouts: reading any supported LoRA file into one normalised form, keyed by the module
names of diffusers' ``WanTransformer3DModel``.

Layouts understood (a prefix ``transformer.`` / ``diffusion_model.`` / ``model.diffusion_model.`` /
``base_model.model.`` is optional everywhere):

- WorldWander ``.ckpt`` (Lightning): ``checkpoint["state_dict"]["lora"]`` with diffusers-PEFT names,
  ``blocks.0.attn1.to_q.lora_A.default.weight`` (read by ``safe_checkpoint``);
- diffusers / PEFT safetensors: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (an adapter name
  such as ``.default`` may follow ``lora_A``); the alpha comes from diffusers' ``lora_adapter_metadata``
  when the file has it;
- original Wan / DiffSynth: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` or
  ``...lora_down.weight`` / ``...lora_up.weight`` with ``...alpha`` (``cross_attn``, ``o``,
  ``ffn.0`` / ``ffn.2``, ``head.head``, ``time_projection.1``, ...);
- kohya / musubi-tuner: ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` with ``.alpha``.

diffusers has converters for the last two (``_convert_non_diffusers_wan_lora_to_diffusers``,
``_convert_musubi_wan_lora_to_diffusers``) but they are not used: both raise ``ValueError`` on any
key they do not know (we must load the rest and report those keys), the musubi one raises
``KeyError`` unless every block has all ten modules each with an alpha, and both fold alpha into
the weights (we keep it, so it can go into PEFT's ``alpha_pattern`` and into converted files).
The name mapping itself is the short table below.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.checkpoint_files import (SAFETENSORS_DTYPES, TensorInfo, load_safetensors,
                                       read_safetensors_header_and_metadata)
from ..errors import ModelFileError
from .adapter_metadata import AdapterMetadata, parse_adapter_metadata
from .safe_checkpoint import inspect_checkpoint_tensors, load_checkpoint_tensors

EXPECTED_LORA = "a LoRA for Wan2.2-TI2V-5B (.safetensors or WorldWander .ckpt)"

# Original-Wan (ComfyUI / single-file) module names -> diffusers names, inside one block ...
_ORIGINAL_TO_DIFFUSERS_IN_BLOCK = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
# ... and outside the blocks.
_ORIGINAL_TO_DIFFUSERS_TOP = {
    "head.head": "proj_out",
    "time_projection.1": "condition_embedder.time_proj",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
}
_DIFFUSERS_TO_ORIGINAL_IN_BLOCK = {v: k for k, v in _ORIGINAL_TO_DIFFUSERS_IN_BLOCK.items()}
_DIFFUSERS_TO_ORIGINAL_TOP = {v: k for k, v in _ORIGINAL_TO_DIFFUSERS_TOP.items()}


def _underscored(table: dict[str, str]) -> dict[str, str]:
    """kohya names replace every '.' by '_'; accept both original and diffusers spellings."""
    out = {k.replace(".", "_"): v for k, v in table.items()}
    out.update({v.replace(".", "_"): v for v in table.values()})
    return out


_KOHYA_IN_BLOCK = _underscored(_ORIGINAL_TO_DIFFUSERS_IN_BLOCK)
_KOHYA_TOP = _underscored(_ORIGINAL_TO_DIFFUSERS_TOP)

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
_KOHYA_PREFIXES = ("lora_unet__", "lora_unet_")  # the double underscore: Wan-Fun LoRAs
_PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<role>A|B)(?:\.(?P<adapter>[^.]+))?\.weight$")
_DOWN_UP_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<role>down|up)\.weight$")
_ALPHA_KEY = re.compile(r"^(?P<module>.+)\.alpha$")
_ROLES = {"A": "down", "B": "up", "down": "down", "up": "up"}


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: delta W = (alpha / rank) * up @ down."""

    down: torch.Tensor  # A, [rank, in_features]
    up: torch.Tensor  # B, [out_features, rank]
    alpha: float | None = None  # None: alpha == rank (scale 1)
    keys: tuple[str, ...] = ()  # the file keys it was read from

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def effective_alpha(self) -> float:
        return float(self.rank) if self.alpha is None else float(self.alpha)

    @property
    def scale(self) -> float:
        return self.effective_alpha / self.rank


@dataclass
class LoraWeights:
    """A LoRA file, normalised: modules by diffusers name, and the keys that could not be read."""

    modules: dict[str, LoraModule]
    unrecognized: list[str] = field(default_factory=list)
    source: str = "<state dict>"
    layout: str = "unknown"


def original_wan_module_name(diffusers_name: str) -> str | None:
    """The original-Wan (ComfyUI single-file) name of a diffusers module, or None when it has none."""
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", diffusers_name)
    if match:
        inner = _DIFFUSERS_TO_ORIGINAL_IN_BLOCK.get(match.group(2))
        return None if inner is None else f"blocks.{match.group(1)}.{inner}"
    return _DIFFUSERS_TO_ORIGINAL_TOP.get(diffusers_name)


def _diffusers_module_name(module: str, kohya: bool) -> tuple[str | None, str]:
    """(diffusers name or None, layout) for a module path with its prefix already removed."""
    block = re.fullmatch(r"blocks_(\d+)_(.+)" if kohya else r"blocks\.(\d+)\.(.+)", module)
    if kohya:
        if block:
            inner = _KOHYA_IN_BLOCK.get(block.group(2))
            return (None if inner is None else f"blocks.{block.group(1)}.{inner}"), "kohya"
        return _KOHYA_TOP.get(module), "kohya"
    if block and block.group(2) in _ORIGINAL_TO_DIFFUSERS_IN_BLOCK:
        return f"blocks.{block.group(1)}.{_ORIGINAL_TO_DIFFUSERS_IN_BLOCK[block.group(2)]}", "original-wan"
    if module in _ORIGINAL_TO_DIFFUSERS_TOP:
        return _ORIGINAL_TO_DIFFUSERS_TOP[module], "original-wan"
    return module, "peft"  # already a diffusers name; whether the model has it is checked on apply


def _parse_key(key: str) -> tuple[str, str, str] | None:
    """(diffusers module, role 'down'/'up'/'alpha', layout) for one file key, or None."""
    kohya = False
    for prefix in _KOHYA_PREFIXES:
        if key.startswith(prefix):
            key, kohya = key[len(prefix):], True
            break
    else:
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
    for pattern in (_PEFT_KEY, _DOWN_UP_KEY, _ALPHA_KEY):
        match = pattern.match(key)
        if match:
            role = _ROLES.get(match.groupdict().get("role") or "", "alpha")
            name, layout = _diffusers_module_name(match.group("module"), kohya)
            return None if name is None else (name, role, layout)
    return None


def normalize_lora_state_dict(state_dict: dict, source: str | os.PathLike = "<state dict>", *,
                              peft_metadata: AdapterMetadata | dict | None = None) -> LoraWeights:
    """Normalise a LoRA state dict of any supported layout (see the module docstring).

    ``peft_metadata``: diffusers' ``lora_adapter_metadata`` (LoraConfig fields, checked by
    adapter_metadata, or the parsed JSON object itself), used for the alpha of modules whose keys
    carry none. Keys that cannot be interpreted (``.diff``, ``dora_scale``, conv LoRAs, a half without its partner, unknown names in the kohya layout, duplicates) are
    listed in ``unrecognized``. Raises ModelFileError naming ``source`` when nothing is a LoRA or the
    down/up halves of a module disagree.
    """
    source = str(source)
    if isinstance(peft_metadata, dict):
        peft_metadata = parse_adapter_metadata(source, json.dumps(peft_metadata))
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unrecognized: list[str] = []
    layouts: collections.Counter = collections.Counter()
    for key, value in state_dict.items():
        parsed = _parse_key(key) if torch.is_tensor(value) else None
        if parsed is None or parsed[1] in groups.get(parsed[0], {}):
            unrecognized.append(key)
            continue
        name, role, layout = parsed
        groups.setdefault(name, {})[role] = (key, value)
        layouts[layout] += 1

    modules: dict[str, LoraModule] = {}
    for name, parts in groups.items():
        keys = tuple(key for key, _ in parts.values())
        if "down" not in parts or "up" not in parts or parts["down"][1].ndim != 2 or parts["up"][1].ndim != 2:
            unrecognized.extend(keys)
            continue
        down, up = parts["down"][1], parts["up"][1]
        if down.shape[0] != up.shape[1]:
            raise ModelFileError(source, f"module {name}: its down/A tensor has rank {down.shape[0]} but its up/B "
                                 f"tensor has rank {up.shape[1]} ({', '.join(keys)}).", "matching LoRA halves")
        alpha = None
        if "alpha" in parts:
            alpha_tensor = parts["alpha"][1]
            if alpha_tensor.numel() != 1:
                raise ModelFileError(source, f"{parts['alpha'][0]} has shape {tuple(alpha_tensor.shape)}.",
                                     "a scalar alpha")
            alpha = float(alpha_tensor.float().item())
            if not math.isfinite(alpha):  # the merged or unfused result would be NaN, blamed on other things
                raise ModelFileError(source, f"{parts['alpha'][0]} is {alpha}.", "a finite alpha")
        elif peft_metadata is not None:
            alpha = peft_metadata.alpha_for(name, down.shape[0])
        modules[name] = LoraModule(down=down, up=up, alpha=alpha, keys=keys)

    if not modules:
        lora_keys = [k for k in state_dict if "lora" in str(k).lower()]
        problem = (f"has {len(lora_keys)} LoRA-named keys but none could be read as a LoRA module "
                   f"(for example {lora_keys[:3]})." if lora_keys else "holds no LoRA tensors.")
        raise ModelFileError(source, problem, EXPECTED_LORA)
    layout = layouts.most_common(1)[0][0]
    return LoraWeights(modules=modules, unrecognized=unrecognized, source=source, layout=layout)


_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def _lora_file_kind(path: Path) -> str:
    """'checkpoint' or 'safetensors' by the file's first bytes; a ModelFileError for an empty file, a
    legacy pickle, or a short file named like a checkpoint."""
    if not path.is_file():
        raise ModelFileError(path, "no such file." if not path.exists() else "is not a regular file.", EXPECTED_LORA)
    with open(path, "rb") as handle:
        magic = handle.read(9)
    if not magic:
        raise ModelFileError(path, "is empty (0 bytes): an interrupted download or copy?", EXPECTED_LORA)
    if magic[:4] == b"PK\x03\x04":
        return "checkpoint"
    # An 8-byte little-endian header length, then JSON. (Checked before the pickle's \x80: a header
    # length whose low byte is 128 also starts with it.)
    looks_safetensors = len(magic) == 9 and magic[8:] == b"{"
    if magic[:1] == b"\x80" and not looks_safetensors:
        raise ModelFileError(path, "is a legacy (pre-1.6) torch.save file or a bare pickle, which cannot be read "
                             "safely.", EXPECTED_LORA)
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES and not looks_safetensors:
        raise ModelFileError(path, f"is not a zip-format PyTorch checkpoint: its {path.stat().st_size:,} bytes do not "
                             "start with a zip record (a damaged or incomplete file?), nor is it a safetensors file.",
                             EXPECTED_LORA)
    return "safetensors"


def _checked_safetensors_header(path: Path):
    header, metadata = read_safetensors_header_and_metadata(path, EXPECTED_LORA)
    if not any("lora" in key.lower() for key in header):
        raise ModelFileError(path, f"holds no LoRA tensors ({len(header)} tensors, none with 'lora' in its name).",
                             EXPECTED_LORA)
    return header, parse_adapter_metadata(path, metadata.get("lora_adapter_metadata"))


def read_lora_file(path: str | os.PathLike) -> LoraWeights:
    """Read a LoRA file of any supported layout: a safetensors file, or a PyTorch zip checkpoint
    (``.ckpt`` / ``.pt`` / ``.pth``, read without executing pickled code). The file is recognised by
    its content, not its extension; the safetensors header and its adapter metadata are checked
    before any tensor is read."""
    path = Path(path)
    if _lora_file_kind(path) == "checkpoint":
        weights = normalize_lora_state_dict(load_checkpoint_tensors(path), path)
        weights.layout = f"checkpoint ({weights.layout} names)"
        return weights
    _header, metadata = _checked_safetensors_header(path)
    return normalize_lora_state_dict(load_safetensors(path), path, peft_metadata=metadata)


def _shape_only(value) -> torch.Tensor:
    """A tensor read (kept), or an empty "meta" tensor of a header entry's / checkpoint reference's shape."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, TensorInfo):
        return torch.empty(value.shape, dtype=SAFETENSORS_DTYPES[value.dtype], device="meta")
    return torch.empty(value.size, dtype=value.dtype, device="meta")  # a safe_checkpoint.TensorRef


def check_lora_file(path: str | os.PathLike) -> LoraWeights:
    """Every check of read_lora_file that reads no tensor data (a preflight check, before any model
    loads): the safetensors header and its adapter metadata, or the checkpoint's zip directory, pickle
    and tensor views; then the LoRA modules the keys and shapes describe. Returns the LoraWeights
    with empty ("meta") tensors, which hold the shapes but no data; only the alpha scalars are read
    (a few bytes each), so the alphas are the file's."""
    path = Path(path)

    def scalar_alpha(key: str, shape) -> bool:  # the only tensors read: a few bytes each
        return key.endswith(".alpha") and math.prod(shape) == 1

    if _lora_file_kind(path) == "checkpoint":
        found = inspect_checkpoint_tensors(path, read=lambda key, ref: scalar_alpha(key, ref.size))
        metadata, layout = None, "checkpoint ({} names)"
    else:
        header, metadata = _checked_safetensors_header(path)
        keys = [key for key, info in header.items() if scalar_alpha(key, info.shape)]
        alphas = load_safetensors(path, keys) if keys else {}
        found = {key: alphas.get(key, info) for key, info in header.items()}
        layout = "{}"
    weights = normalize_lora_state_dict({key: _shape_only(value) for key, value in found.items()}, path,
                                        peft_metadata=metadata)
    weights.layout = layout.format(weights.layout)
    return weights
