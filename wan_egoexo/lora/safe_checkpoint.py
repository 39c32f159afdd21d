"""Reading the LoRA tensors out of a PyTorch zip checkpoint (``torch.save`` / PyTorch Lightning
``.ckpt``) without ever executing pickled code.

Why not ``torch.load(weights_only=True)``: it refuses the WHOLE file as soon as the pickle names
one global outside its allowlist, and a Lightning checkpoint always does (its hyper-parameters are
an ``AttributeDict``, an omegaconf ``DictConfig``, an argparse ``Namespace`` or the like). The
released WorldWander ``.ckpt`` files are such checkpoints, so the safe loader would reject them and
the unsafe one (``weights_only=False``) would run whatever the file asks for.

So the pickle is read here by a restricted unpickler written for this purpose:

- tensors are rebuilt by our own functions (nothing from torch is called while unpickling) as
  lazy references to the zip's ``data/<key>`` records; only the tensors we return are read;
- plain containers and values (dict, OrderedDict, list, tuple, set, numbers, str, bytes, torch
  dtypes) are rebuilt as themselves;
- every other global becomes an inert placeholder class created on the spot: nothing is
  imported, nothing is called, and whatever the pickle "calls" or "sets" on it is only recorded.

Format facts (from torch/serialization.py): the zip holds ``<dir>/data.pkl`` and one
``<dir>/data/<key>`` record per storage; a storage is referenced through ``persistent_load`` with
``("storage", storage_type, key, location, numel)``; tensors are rebuilt with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])``
(or ``_rebuild_tensor_v3`` with an explicit dtype for dtypes without a legacy storage class).
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelFileError

_EXPECTED = "a PyTorch zip checkpoint (torch.save / Lightning .ckpt) holding LoRA tensors"

# Legacy typed-storage class names torch writes into the pickle, and the dtype each stands for.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "UntypedStorage": torch.uint8,
}

# Harmless builtins a checkpoint's plain data may be pickled with (calling them runs no user code).
_SAFE_BUILTINS = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
}


class InertObject:
    """Stand-in for an object of a class the checkpoint names but we refuse to import.

    Subclasses are created per global (``origin`` says which). Construction, ``__setstate__``,
    item and list operations only record their arguments."""

    origin = "?"

    def __new__(cls, *args, **kwargs):
        # Set up in __new__: the NEWOBJ opcode creates instances without calling __init__.
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.elements = args, kwargs, None, {}, []
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __repr__(self):
        return f"<inert {self.origin}>"


@dataclass(eq=False)
class _StorageType:
    dtype: torch.dtype | None  # None: an UntypedStorage, whose tensors carry their own dtype (v3)


@dataclass(eq=False)
class _StorageRecord:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(eq=False)
class TensorRef:
    """A tensor described by the pickle, not yet read from the zip."""

    storage: _StorageRecord
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


def _bytes_from_text(text, encoding="latin1"):
    # Protocol-2 pickles write bytes as _codecs.encode(str, "latin1"); only that use is honoured.
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unsupported _codecs.encode call")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only to the inert values described in the module docstring."""

    def __init__(self, handle):
        super().__init__(handle, encoding="utf-8")
        self._storages: dict[str, _StorageRecord] = {}

    def find_class(self, module, name):
        if (module, name) in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[(module, name)]
        if module == "_codecs" and name == "encode":
            return _bytes_from_text
        if module == "torch._utils":
            # Bound methods: a pickle cannot set attributes on them (BUILD fails), so it cannot
            # tamper with the rebuild logic.
            if name == "_rebuild_tensor_v2":
                return self._rebuild_tensor_v2
            if name == "_rebuild_tensor_v3":
                return self._rebuild_tensor_v3
            if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
                return self._rebuild_parameter
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(None if name == "UntypedStorage" else _STORAGE_DTYPES[name])
        # vars(), not getattr(): torch's module __getattr__ would import submodules on demand.
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]  # dtype objects are immutable values
        return type(name, (InertObject,), {"origin": f"{module}.{name}", "__module__": __name__})

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        typename, storage_type, key, _location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii")
        if typename != "storage" or not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype if storage_type.dtype is not None else torch.uint8
            self._storages[key] = _StorageRecord(key, dtype, numel)
        return self._storages[key]

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _StorageRecord):
            raise pickle.UnpicklingError("tensor without a storage record")
        return TensorRef(storage, int(offset), tuple(int(d) for d in size), tuple(int(d) for d in stride),
                         storage.dtype)

    def _rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        ref = self._rebuild_tensor_v2(storage, offset, size, stride)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError("tensor with an unknown dtype")
        ref.dtype = dtype
        return ref

    def _rebuild_parameter(self, data, *args):
        return data


class _ZipCheckpoint:
    """The records of an open torch zip checkpoint."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic != b"PK\x03\x04":
            hint = (" It looks like a legacy (pre-1.6) torch.save file or a bare pickle; re-save it with a current "
                    "torch or convert it to safetensors." if magic[:1] == b"\x80" else "")
            raise ModelFileError(path, "is not a zip-format PyTorch checkpoint." + hint, _EXPECTED)
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelFileError(path, f"is truncated or corrupted: its zip directory cannot be read ({exc}); "
                                 "an incomplete download?", "the complete file") from None
        pickles = [n for n in self.zip.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelFileError(path, "is a zip file but not a PyTorch checkpoint (no <dir>/data.pkl record).", _EXPECTED)
        self.prefix = pickles[0][: -len("data.pkl")]
        byteorder = self._read_optional("byteorder")
        if byteorder not in (None, b"little"):
            raise ModelFileError(path, f"stores its tensors in {byteorder!r} byte order; only little-endian "
                                 "checkpoints are supported.", _EXPECTED)

    def _read_optional(self, name):
        try:
            return self.zip.read(self.prefix + name)
        except KeyError:
            return None

    def read_structure(self):
        try:
            with self.zip.open(self.prefix + "data.pkl") as handle:
                return _RestrictedUnpickler(handle).load()
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ModelFileError(self.path, f"is truncated or corrupted: its pickle cannot be read ({exc}).",
                                 "the complete file") from None
        except (pickle.UnpicklingError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            raise ModelFileError(self.path, f"has a pickle this loader cannot read safely ({exc}).", _EXPECTED) from None

    def read_storage(self, record: _StorageRecord) -> torch.Tensor:
        name = f"{self.prefix}data/{record.key}"
        nbytes = record.numel * record.dtype.itemsize
        if record.numel == 0:
            return torch.empty(0, dtype=record.dtype)
        try:
            info = self.zip.getinfo(name)
            if info.file_size != nbytes:
                raise ModelFileError(self.path, f"record {name} holds {info.file_size} bytes, but its tensor needs "
                                     f"{nbytes}.", "an intact checkpoint")
            buffer = bytearray(nbytes)
            with self.zip.open(info) as handle:
                got = handle.readinto(buffer)
        except KeyError:
            raise ModelFileError(self.path, f"lacks the tensor record {name} (truncated?).", "the complete file") from None
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ModelFileError(self.path, f"is truncated or corrupted: record {name} cannot be read ({exc}).",
                                 "the complete file") from None
        if got != nbytes:
            raise ModelFileError(self.path, f"is truncated: record {name} is short.", "the complete file")
        return torch.frombuffer(buffer, dtype=record.dtype)

    def materialize(self, refs: dict[str, TensorRef]) -> dict[str, torch.Tensor]:
        storages: dict[str, torch.Tensor] = {}
        out = {}
        for key, ref in refs.items():
            if ref.storage.key not in storages:
                storages[ref.storage.key] = self.read_storage(ref.storage)
            flat = storages[ref.storage.key]
            try:
                if ref.dtype != flat.dtype:
                    flat = flat.view(ref.dtype)
                tensor = flat.as_strided(ref.size, ref.stride, ref.offset)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise ModelFileError(self.path, f"describes tensor {key!r} outside its storage ({exc}).",
                                     "an intact checkpoint") from None
            whole = ref.offset == 0 and tensor.is_contiguous() and tensor.numel() == flat.numel()
            out[key] = tensor if whole else tensor.clone()
        return out


def _is_lora_key(key: str) -> bool:
    return "lora" in key.lower()


def _lora_container(structure) -> tuple[Mapping, str]:
    """Where the LoRA tensors live: WorldWander's ``state_dict["lora"]``, a Lightning/plain
    ``state_dict``, or the top level of a bare ``torch.save(state_dict)``."""
    if not isinstance(structure, Mapping):
        return {}, "the top level"
    state_dict = structure.get("state_dict")
    if isinstance(state_dict, Mapping):
        lora = state_dict.get("lora")
        if isinstance(lora, Mapping):
            return lora, 'checkpoint["state_dict"]["lora"]'
        return state_dict, 'checkpoint["state_dict"]'
    return structure, "the top level"


def load_checkpoint_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a PyTorch zip checkpoint, keyed as stored (e.g.
    ``blocks.0.attn1.to_q.lora_A.default.weight``), read without executing any pickled code.

    Taken from ``checkpoint["state_dict"]["lora"]`` (WorldWander) when present, else from
    ``checkpoint["state_dict"]`` or the top level: every tensor there whose key mentions "lora",
    plus the ``*.alpha`` tensors. Other tensors (optimizer state...) are never read.
    Raises ModelFileError naming the file when it is missing, not a zip checkpoint, truncated,
    or holds no LoRA tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such file.", _EXPECTED)
    checkpoint = _ZipCheckpoint(path)
    try:
        container, where = _lora_container(checkpoint.read_structure())
        refs = {str(k): v for k, v in container.items() if isinstance(v, TensorRef)}
        lora_refs = {k: v for k, v in refs.items() if _is_lora_key(k) or k.endswith(".alpha")}
        if not any(_is_lora_key(k) for k in lora_refs):
            raise ModelFileError(path, f"holds no LoRA tensors: {where} has {len(refs)} tensors and none has "
                                 "'lora' in its name.", _EXPECTED)
        return checkpoint.materialize(lora_refs)
    finally:
        checkpoint.zip.close()
