"""Where each weight of a loaded transformer came from (file and key), so that weights changed in
place (merged LoRAs) can be put back bit for bit by reading them again, with no copy kept in memory.

The loader records the map and each file's size and modification time; ``read_original`` re-reads
one tensor through safetensors' memory map and converts it the way the loader did (a dtype cast, or
for fp8-scaled files the same dequantisation, both deterministic). A file changed since loading is refused by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import ModelFileError
from .fp8_scaled import dequantize

_ATTR = "_wan_egoexo_weight_source"


@dataclass(frozen=True)
class WeightSource:
    keys: dict[str, tuple[str, str]]  # parameter name -> (file, key in the file)
    stamps: dict[str, tuple[int, int]]  # file -> (size, mtime_ns) when it was loaded
    scales: dict[str, str] = field(default_factory=dict)  # parameter name -> its scale_weight key, same file


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def record_weight_source(model, keys: dict[str, tuple[str | os.PathLike, str]],
                         scales: dict[str, str] | None = None) -> None:
    """Remember that parameter ``name`` was read from ``keys[name] = (file, key)`` (and dequantised
    with the per-tensor scale ``scales[name]`` of the same file, for fp8-scaled files)."""
    keys = {name: (str(file), key) for name, (file, key) in keys.items()}
    model.__dict__[_ATTR] = WeightSource(keys, {file: _stamp(file) for file, _ in set(keys.values())},
                                         dict(scales or {}))


def weight_source(model) -> WeightSource | None:
    return model.__dict__.get(_ATTR)


def read_original(source: WeightSource, name: str, like: torch.Tensor) -> torch.Tensor:
    """Parameter ``name`` as loaded: read from its file and cast to ``like``'s dtype (on the CPU)."""
    if name not in source.keys:
        raise KeyError(name)
    file, key = source.keys[name]
    try:
        unchanged = _stamp(file) == source.stamps[file]
    except OSError:
        unchanged = False
    if not unchanged:
        raise ModelFileError(Path(file), "changed or disappeared since the transformer was loaded, so its original "
                             "weights cannot be read back; load the model again.")
    with safe_open(file, framework="pt") as handle:
        scale_key = source.scales.get(name)
        return dequantize(handle.get_tensor(key), None if scale_key is None else handle.get_tensor(scale_key),
                          like.dtype)
