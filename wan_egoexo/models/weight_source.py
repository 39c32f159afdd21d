"""Where each weight of a loaded transformer came from (file and key), so that weights changed in
place (merged LoRAs) can be put back bit for bit by reading them again, with no copy kept in memory.

The loader records the map and a stamp of each file: size, modification time, inode, device and
change time. ``read_original`` re-reads one tensor through safetensors' memory map and converts it
the way the loader did (a dtype cast, or for fp8-scaled files the same dequantisation, both
deterministic).

Before anything is read back, ``verify_originals`` checks that the file is still the one loaded,
in two ways, and refuses a changed file by name: the stamp (a file put in place by ``cp -p``,
``rsync -t`` or ``os.replace`` + ``utime`` keeps its size and mtime but has another inode, and its
change time cannot be set back), and a content fingerprint of each tensor to be read: a few rows of
the weight, sampled from memory before it is first changed (``sample_weight``), compared bit for bit
with the same rows read from the file (a few KB per tensor, read before any weight is written back).
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
SAMPLE_ROWS = 4
SAMPLE_COLUMNS = 256


@dataclass(frozen=True)
class WeightSource:
    keys: dict[str, tuple[str, str]]  # parameter name -> (file, key in the file)
    stamps: dict[str, tuple[int, ...]]  # file -> (size, mtime_ns, inode, device, ctime_ns) when it was loaded
    scales: dict[str, str] = field(default_factory=dict)  # parameter name -> its scale_weight key, same file


def _stamp(path: str) -> tuple[int, ...]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, stat.st_ctime_ns


def record_weight_source(model, keys: dict[str, tuple[str | os.PathLike, str]],
                         scales: dict[str, str] | None = None) -> None:
    """Remember that parameter ``name`` was read from ``keys[name] = (file, key)`` (and dequantised
    with the per-tensor scale ``scales[name]`` of the same file, for fp8-scaled files)."""
    keys = {name: (str(file), key) for name, (file, key) in keys.items()}
    model.__dict__[_ATTR] = WeightSource(keys, {file: _stamp(file) for file, _ in set(keys.values())},
                                         dict(scales or {}))


def weight_source(model) -> WeightSource | None:
    return model.__dict__.get(_ATTR)


def _changed(file: str) -> ModelFileError:
    return ModelFileError(Path(file), "changed or disappeared since the transformer was loaded, so its original "
                          "weights cannot be read back; load the model again.")


def _check_stamp(source: WeightSource, file: str) -> None:
    try:
        unchanged = _stamp(file) == source.stamps[file]
    except OSError:
        unchanged = False
    if not unchanged:
        raise _changed(file)


def _sample_rows(rows: int) -> list[int]:
    if rows <= SAMPLE_ROWS:
        return list(range(rows))
    return sorted({round(i * (rows - 1) / (SAMPLE_ROWS - 1)) for i in range(SAMPLE_ROWS)})


def _as_bytes(rows: torch.Tensor) -> torch.Tensor:
    """The bits of ``rows`` (so NaN compares equal to itself)."""
    return rows.contiguous().reshape(-1).view(torch.uint8)


def sample_weight(weight: torch.Tensor) -> torch.Tensor:
    """A fingerprint of a weight as loaded: the bytes of up to SAMPLE_COLUMNS leading columns of
    SAMPLE_ROWS rows spread over it (it stays on the weight's device: no synchronisation)."""
    matrix = weight.detach().reshape(weight.shape[0], -1) if weight.ndim else weight.detach().reshape(1, 1)
    rows = _sample_rows(matrix.shape[0])
    return _as_bytes(matrix[rows, :SAMPLE_COLUMNS])


def verify_originals(source: WeightSource, samples: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> None:
    """Check, before any weight is read back, that each parameter in ``samples`` can be: its file has
    the stamp it had at load time, and the sampled rows read from it (cast as the loader cast them,
    to ``like[name]``'s dtype) are bit for bit those sampled from memory before the weight changed.
    Raises ModelFileError naming the file (and the tensor) otherwise."""
    by_file: dict[str, list[str]] = {}
    for name in samples:
        by_file.setdefault(source.keys[name][0], []).append(name)
    for file, names in by_file.items():
        _check_stamp(source, file)
        with safe_open(file, framework="pt") as handle:
            for name in names:
                key = source.keys[name][1]
                view = handle.get_slice(key)
                shape = view.get_shape()
                if list(shape) != list(like[name].shape):
                    raise ModelFileError(Path(file), f"tensor {key} is now {tuple(shape)}, not the "
                                         f"{tuple(like[name].shape)} loaded: the file was replaced; load the model "
                                         "again.")
                rows = _sample_rows(shape[0]) if shape else []
                read = [view[row:row + 1].reshape(1, -1)[:, :SAMPLE_COLUMNS] for row in rows] if shape else \
                    [view[()].reshape(1, 1)]
                scale_key = source.scales.get(name)
                scale = None if scale_key is None else handle.get_tensor(scale_key)
                got = _as_bytes(dequantize(torch.cat(read), scale, like[name].dtype))
                expected = samples[name].to("cpu")
                if got.shape != expected.shape or not torch.equal(got, expected):
                    raise ModelFileError(Path(file), f"tensor {key} no longer holds the values loaded from it (sampled "
                                         "rows differ): the file was replaced or rewritten since the transformer was "
                                         "loaded, so its original weights cannot be read back; load the model again.")


def read_original(source: WeightSource, name: str, like: torch.Tensor) -> torch.Tensor:
    """Parameter ``name`` as loaded: read from its file and cast to ``like``'s dtype (on the CPU).
    The file's stamp is checked; its content, by verify_originals, before a restore starts."""
    if name not in source.keys:
        raise KeyError(name)
    file, key = source.keys[name]
    _check_stamp(source, file)
    with safe_open(file, framework="pt") as handle:
        scale_key = source.scales.get(name)
        return dequantize(handle.get_tensor(key), None if scale_key is None else handle.get_tensor(scale_key),
                          like.dtype)
