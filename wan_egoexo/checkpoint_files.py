"""Reading model files safely: safetensors headers (checked before any tensor is read),
tensor loading, and locating a component inside a Diffusers-format folder.

The header is parsed here rather than through ``safetensors.safe_open`` so that a wrong,
truncated or non-safetensors file is reported with its path and the exact fault before any
weight is touched; tensors themselves are read with the safetensors library.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import ModelFileError

_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors dtype code, e.g. "BF16", "F8_E4M3"
    shape: tuple[int, ...]


def read_safetensors_header(path: str | os.PathLike, expected: str | None = None) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header without reading any tensor data.

    Raises ModelFileError naming the file when it is missing, not a safetensors file, or
    shorter than its header says (a truncated download); ``expected`` says what file was wanted.
    """
    path = Path(path)
    wanted = expected or "a .safetensors file"
    if not path.is_file():
        raise ModelFileError(path, "no such file.", expected)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelFileError(path, f"is {size} bytes long, too short to be a safetensors file.", wanted)
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise ModelFileError(path, "is not a safetensors file (its first 8 bytes are not a valid header length).",
                                 wanted)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(path, "is not a safetensors file (its header is not JSON).", wanted) from None
    header.pop("__metadata__", None)
    data_len = size - 8 - header_len
    infos: dict[str, TensorInfo] = {}
    end = 0
    for key, entry in header.items():
        try:
            start, stop = entry["data_offsets"]
            infos[key] = TensorInfo(entry["dtype"], tuple(int(d) for d in entry["shape"]))
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(path, f"has a malformed header entry for {key!r}.", wanted) from None
        end = max(end, int(stop))
    if end > data_len:
        raise ModelFileError(path, f"is truncated: its header describes {end} bytes of tensor data but only "
                             f"{data_len} are present (an incomplete download?).", f"the complete file: {wanted}")
    return infos


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The free-form ``__metadata__`` strings of a safetensors file (empty when absent)."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_safetensors(path: str | os.PathLike, keys=None, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors (all, or only ``keys``) from a safetensors file already checked by read_safetensors_header."""
    out = {}
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        for key in (handle.keys() if keys is None else keys):
            out[key] = handle.get_tensor(key)
    return out


def strip_prefix(names, prefixes) -> tuple[str, dict[str, str]]:
    """Find which of ``prefixes`` (tried in order, "" last) all names share; return it and a map
    from the stripped name to the name in the file."""
    names = list(names)
    for prefix in prefixes:
        if prefix and all(n.startswith(prefix) for n in names):
            return prefix, {n[len(prefix):]: n for n in names}
    return "", {n: n for n in names}


def find_diffusers_component(path: str | os.PathLike, component: str) -> Path | None:
    """If ``path`` is a Diffusers pipeline folder holding ``component/`` or is itself that component
    folder (it has a config.json), return the component folder; else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / component / "config.json").is_file():
        return path / component
    if (path / "config.json").is_file():
        return path
    return None


def diffusers_weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of a Diffusers component folder (sharded or not)."""
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        try:
            weight_map = json.loads(index[0].read_text())["weight_map"]
        except (ValueError, KeyError):
            raise ModelFileError(index[0], "is not a valid safetensors index (no weight_map).") from None
        files = sorted({folder / name for name in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFileError(folder, "holds no .safetensors weights.",
                             "a Diffusers component folder with config.json and *.safetensors")
    return files


def read_folder_headers(folder: Path) -> tuple[dict[str, TensorInfo], dict[str, Path]]:
    """Headers of every weight file in a Diffusers component folder, and which file holds each key."""
    infos: dict[str, TensorInfo] = {}
    where: dict[str, Path] = {}
    for file in diffusers_weight_files(folder):
        for key, info in read_safetensors_header(file).items():
            infos[key] = info
            where[key] = file
    return infos, where


def load_from_files(where: dict[str, Path], keys, device="cpu") -> dict[str, torch.Tensor]:
    """Load ``keys`` from the files named in ``where`` (key -> file), opening each file once."""
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(where[key], []).append(key)
    out = {}
    for file, file_keys in by_file.items():
        out.update(load_safetensors(file, file_keys, device))
    return out
