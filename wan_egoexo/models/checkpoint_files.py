"""Reading model files safely: safetensors headers (checked before any tensor is read),
tensor loading, and locating a component inside a Diffusers-format folder.

The header is parsed and checked here rather than by ``safetensors.safe_open`` so that a wrong,
truncated, hostile or non-safetensors file is reported with its path, the rule it breaks and what
was expected, before any weight is touched, and so that the reader's cost is bounded: the header's
size and its number of entries are limited, every dtype must be one this project reads, and the
tensors' byte ranges must tile the data exactly (safetensors' own rule). Tensors themselves are
read with the safetensors library; its errors are turned into ModelFileError as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import ModelFileError

# The largest header read. Real ones are far smaller (the 5B transformer's: ~100 KB for 825 tensors);
# a LoRA's free-form metadata (kohya training tags) can reach a few MiB. safetensors refuses > 100 MB.
MAX_HEADER_BYTES = 32 << 20
MAX_TENSORS = 200_000
# The dtype codes of the safetensors format that the library's torch bindings read, and their
# bytes per element. F4 / F6_* / E8M0 (sub-byte or scale formats) are refused by name.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz, "C64": torch.complex64,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors dtype code, e.g. "BF16", "F8_E4M3"
    shape: tuple[int, ...]


class _TooManyObjects(Exception):
    pass


def _parse_header_json(raw: bytes):
    count = 0

    def counted(pairs):  # json calls this for every object: stop before a huge header is built
        nonlocal count
        count += 1
        if count > MAX_TENSORS + 2:
            raise _TooManyObjects
        return dict(pairs)

    return json.loads(raw.decode("utf-8"), object_pairs_hook=counted)


_INT64 = 1 << 63


def _brief(value) -> str:
    """At most 80 characters of a JSON value, without converting huge integers to text."""
    if isinstance(value, list):
        items = ["[...]" if isinstance(v, (list, dict)) else _brief(v) for v in value[:8]]
        return ("[" + ", ".join(items) + (", ...]" if len(value) > 8 else "]"))[:80]
    if type(value) is int and value.bit_length() > 200:
        return f"<{value.bit_length()}-bit integer>"
    return str(value)[:80]


def _checked_entry(path, key: str, entry, wanted: str) -> tuple[TensorInfo, int, int]:
    """(info, begin, end) of one header entry, or ModelFileError saying what is wrong with it."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ModelFileError(path, f"has a malformed header entry for {key!r} (it needs dtype, shape and "
                             "data_offsets).", wanted)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise ModelFileError(path, f"tensor {key!r} has dtype {str(dtype)[:40]!r}, which this loader does not read.",
                             f"one of {', '.join(SAFETENSORS_DTYPES)} ({wanted})")
    # Sizes and offsets are held below 2**63 (torch's and safetensors' int64 / usize): JSON integers
    # may have thousands of digits, and products of such numbers do not even print (Python refuses
    # to convert integers of more than 4,300 digits to text).
    if not isinstance(shape, list) or len(shape) > 64 or not all(type(d) is int and 0 <= d < _INT64 for d in shape):
        raise ModelFileError(path, f"tensor {key!r} has shape {_brief(shape)}.",
                             "a list of at most 64 non-negative integers below 2**63")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int and o < _INT64 for o in offsets) \
            or not 0 <= offsets[0] <= offsets[1]:
        raise ModelFileError(path, f"tensor {key!r} has data_offsets {_brief(offsets)}.",
                             "[begin, end] with 0 <= begin <= end < 2**63")
    numel = 1
    for dim in shape:
        numel *= dim
    nbytes = numel * SAFETENSORS_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ModelFileError(path, f"tensor {key!r} of shape {tuple(shape)} and dtype {dtype} needs {nbytes:,} bytes, "
                             f"but its data_offsets {offsets} span {offsets[1] - offsets[0]:,}.",
                             "data_offsets that match the shape and dtype")
    return TensorInfo(dtype, tuple(shape)), offsets[0], offsets[1]


def read_safetensors_header(path: str | os.PathLike, expected: str | None = None) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header without reading any tensor data (see
    read_safetensors_header_and_metadata, which also returns the ``__metadata__`` strings)."""
    return read_safetensors_header_and_metadata(path, expected)[0]


def read_safetensors_header_and_metadata(path: str | os.PathLike, expected: str | None = None
                                         ) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header without reading any tensor data.

    Raises ModelFileError naming the file, the rule and what was expected when it is missing, not
    a safetensors file, shorter than its header says (a truncated download), or breaks a rule:
    header over MAX_HEADER_BYTES or MAX_TENSORS entries, a dtype outside SAFETENSORS_DTYPES,
    byte ranges that overlap, leave gaps or disagree with the shape; ``expected`` says what
    file was wanted.
    """
    path = Path(path)
    wanted = expected or "a .safetensors file"
    if not path.is_file():
        raise ModelFileError(path, "no such file." if not path.exists() else "is not a regular file.", expected)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if not head:
            raise ModelFileError(path, "is empty (0 bytes): an interrupted download or copy?", wanted)
        if len(head) < 8:
            raise ModelFileError(path, f"is {size} bytes long, too short to be a safetensors file.", wanted)
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > size - 8:
            raise ModelFileError(path, "is not a safetensors file (its first 8 bytes are not a valid header length).",
                                 wanted)
        if header_len > MAX_HEADER_BYTES:
            raise ModelFileError(path, f"has a {header_len:,}-byte header; at most {MAX_HEADER_BYTES:,} bytes are read.",
                                 f"{wanted} (real model headers are well under 1 MiB)")
        raw = handle.read(header_len)
    try:
        header = _parse_header_json(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except _TooManyObjects:
        raise ModelFileError(path, f"describes more than {MAX_TENSORS:,} tensors.", wanted) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelFileError(path, "is not a safetensors file (its header is not JSON).", wanted) from None
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise ModelFileError(path, "has a __metadata__ entry that is not a map of strings.", wanted)
    metadata = metadata or {}
    infos: dict[str, TensorInfo] = {}
    ranges = []
    for key, entry in header.items():
        infos[key], begin, end = _checked_entry(path, key, entry, wanted)
        ranges.append((begin, end, key))
    data_len = size - 8 - header_len
    position = 0
    for begin, end, key in sorted(ranges):
        if begin != position:
            problem = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position:,}"
            raise ModelFileError(path, f"tensor {key!r} (bytes {begin:,}..{end:,}) {problem}.",
                                 "tensors whose byte ranges tile the data exactly")
        position = end
    if position > data_len:
        raise ModelFileError(path, f"is truncated: its header describes {position} bytes of tensor data but only "
                             f"{data_len} are present (an incomplete download?).", f"the complete file: {wanted}")
    if position < data_len:
        raise ModelFileError(path, f"has {data_len - position:,} bytes after its last tensor.",
                             "tensors whose byte ranges tile the data exactly")
    return infos, metadata


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """safetensors' safe_open, with its errors (and I/O errors) raised as ModelFileError naming the file."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            yield handle
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(path, f"cannot be read as safetensors ({exc}).", "an intact .safetensors file") from None


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The free-form ``__metadata__`` strings of a safetensors file (empty when absent)."""
    with open_safetensors(path) as handle:
        return dict(handle.metadata() or {})


def load_safetensors(path: str | os.PathLike, keys=None, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors (all, or only ``keys``) from a safetensors file already checked by read_safetensors_header."""
    out = {}
    with open_safetensors(path, device) as handle:
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
