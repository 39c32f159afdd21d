"""Reading the LoRA tensors out of a PyTorch zip checkpoint (``torch.save`` / PyTorch Lightning
``.ckpt``) without ever executing pickled code, at a cost that follows the file's real tensor bytes.

Why not ``torch.load(weights_only=True)``: it refuses the WHOLE file as soon as the pickle names
one global outside its allowlist, and a Lightning checkpoint always does (its hyper-parameters are
an ``AttributeDict``, an omegaconf ``DictConfig``, an argparse ``Namespace`` or the like). The
released WorldWander ``.ckpt`` files are such checkpoints, so the safe loader would reject them and
the unsafe one (``weights_only=False``) would run whatever the file asks for.

So the pickle is read by our bounded interpreter (bounded_unpickler), with torch's names resolved here:

- tensors are rebuilt by our own functions as lazy references to the zip's ``data/<key>`` records;
  only the tensors we return are read, and only after their view is checked against their storage
  (no tensor larger than its storage: a stride-0 view of 4 bytes once cloned into 2 GiB);
- torch dtypes and storage types are values; every other global is an inert record.

The zip itself is read through checked_zip (records checked against the archive before reading).
Format facts (from torch/serialization.py): the zip holds ``<dir>/data.pkl`` and one
``<dir>/data/<key>`` record per storage; a storage is referenced through ``persistent_load`` with
``("storage", storage_type, key, location, numel)``; tensors are rebuilt with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])``
(or ``_rebuild_tensor_v3`` with an explicit dtype for dtypes without a legacy storage class).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelFileError
from .bounded_unpickler import Hook, PickleLimits, PickleRefused, load_bounded
from .checked_zip import CheckedZip

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
# The dtypes a returned tensor may have: whole-byte element types the LoRA code can convert.
# Sub-byte (uint1..7, int1..7, float4_e2m1fn_x2), bit and quantized dtypes are refused by name.
READABLE_DTYPES = frozenset({
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool, torch.complex64, torch.complex128,
})


@dataclass(frozen=True)
class CheckpointLimits:
    """Counts a checkpoint may not exceed (the released LoRA checkpoints: 2,406 records, 2,400
    storages, 2-D tensors)."""

    pickle: PickleLimits = field(default_factory=PickleLimits)
    max_records: int = 100_000
    max_storages: int = 100_000
    max_dims: int = 16


@dataclass(eq=False)
class _StorageType:
    dtype: torch.dtype | None  # None: an UntypedStorage, whose tensors carry their own dtype (v3)


@dataclass(eq=False)
class _StorageRecord:
    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(eq=False)
class TensorRef:
    """A tensor described by the pickle, not yet read from the zip."""

    storage: _StorageRecord
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


class _TorchNames:
    """What torch's names in a checkpoint pickle stand for: our rebuild functions, dtypes, storage types."""

    def __init__(self, limits: CheckpointLimits):
        self.limits = limits
        self.storages: dict[str, _StorageRecord] = {}
        self._hooks = {
            ("torch._utils", "_rebuild_tensor_v2"): Hook("_rebuild_tensor_v2", self.rebuild_v2),
            ("torch._utils", "_rebuild_tensor_v3"): Hook("_rebuild_tensor_v3", self.rebuild_v3),
            ("torch._utils", "_rebuild_parameter"): Hook("_rebuild_parameter", self.first_argument),
            ("torch._utils", "_rebuild_parameter_with_state"): Hook("_rebuild_parameter", self.first_argument),
            ("torch._tensor", "_rebuild_from_type_v2"): Hook("_rebuild_from_type_v2", self.rebuild_from_type),
            ("torch", "Size"): Hook("Size", lambda sizes=(): self.int_tuple(sizes, "torch.Size")),
        }

    def resolve(self, module: str, name: str):
        if (module, name) in self._hooks:
            return self._hooks[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(None if name == "UntypedStorage" else _STORAGE_DTYPES[name])
        # vars(), not getattr(): torch's module __getattr__ would import submodules on demand.
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]  # dtype objects are immutable values
        return None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise PickleRefused("a persistent id is not torch's (\"storage\", type, key, location, numel)")
        typename, storage_type, key, _location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii", "replace")
        if typename != "storage" or not isinstance(storage_type, _StorageType) or type(numel) is not int \
                or numel < 0 or not isinstance(key, (str, int)):
            raise PickleRefused("a persistent id is not torch's (\"storage\", type, key, location, numel)")
        key = str(key)
        dtype = storage_type.dtype if storage_type.dtype is not None else torch.uint8
        known = self.storages.get(key)
        if known is None:
            if len(self.storages) >= self.limits.max_storages:
                raise PickleRefused(f"it references more than {self.limits.max_storages:,} tensor storages")
            known = self.storages[key] = _StorageRecord(key, dtype, numel)
        elif (known.dtype, known.numel) != (dtype, numel):
            raise PickleRefused(f"storage {key} is declared twice with different sizes or types")
        return known

    def int_tuple(self, values, what: str) -> tuple[int, ...]:
        if not isinstance(values, (tuple, list)) or len(values) > self.limits.max_dims \
                or not all(type(v) is int for v in values):
            raise PickleRefused(f"a {what} is not a list of at most {self.limits.max_dims} integers")
        return tuple(values)

    def rebuild_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _StorageRecord) or type(offset) is not int:
            raise PickleRefused("a tensor is rebuilt without a storage record and an integer offset")
        return TensorRef(storage, offset, self.int_tuple(size, "tensor size"), self.int_tuple(stride, "tensor stride"),
                         storage.dtype)

    def rebuild_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if not isinstance(dtype, torch.dtype):
            raise PickleRefused("a tensor is rebuilt with something other than a torch dtype")
        ref = self.rebuild_v2(storage, offset, size, stride)
        ref.dtype = dtype
        return ref

    @staticmethod
    def first_argument(data=None, *args):
        return data

    @staticmethod
    def rebuild_from_type(function=None, _type=None, args=(), _state=None):
        if isinstance(function, Hook) and function.function is not None and isinstance(args, tuple):
            return function.function(*args)
        return None


class _Checkpoint:
    """An open torch zip checkpoint: its pickle and its storage records."""

    def __init__(self, path: Path, limits: CheckpointLimits):
        self.path, self.limits = path, limits
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if not magic:
            raise ModelFileError(path, "is empty (0 bytes): an interrupted download or copy?", _EXPECTED)
        if magic != b"PK\x03\x04":
            hint = (" It looks like a legacy (pre-1.6) torch.save file or a bare pickle; re-save it with a current "
                    "torch or convert it to safetensors." if magic[:1] == b"\x80" else "")
            raise ModelFileError(path, "is not a zip-format PyTorch checkpoint." + hint, _EXPECTED)
        self.zip = CheckedZip(path, _EXPECTED, limits.max_records)
        try:
            pickles = [n for n in self.zip.names() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ModelFileError(path, "is a zip file but not a PyTorch checkpoint (no <dir>/data.pkl record).",
                                     _EXPECTED)
            self.prefix = pickles[0][: -len("data.pkl")]
            byteorder = self.zip.read(self.prefix + "byteorder", max_bytes=16, budgeted=False)
            if byteorder not in (None, b"little"):
                raise ModelFileError(path, f"stores its tensors in {bytes(byteorder)!r} byte order; only little-endian "
                                     "checkpoints are supported.", _EXPECTED)
        except BaseException:
            self.zip.close()
            raise

    def read_structure(self, names: _TorchNames):
        # bounded by its own limits (size, opcodes, copies), not by the tensor records' inflation budget
        data = self.zip.read(self.prefix + "data.pkl", max_bytes=self.limits.pickle.max_bytes, budgeted=False)
        try:
            return load_bounded(data, names.resolve, names.persistent_load, self.limits.pickle)
        except PickleRefused as exc:
            raise ModelFileError(self.path, f"has a pickle this loader refuses: {exc}.", _EXPECTED) from None

    def read_storage(self, record: _StorageRecord) -> torch.Tensor:
        if record.numel == 0:
            return torch.empty(0, dtype=record.dtype)
        name = f"{self.prefix}data/{record.key}"
        buffer = self.zip.read(name, max_bytes=record.nbytes, expected_bytes=record.nbytes, writable=True)
        if buffer is None:
            raise ModelFileError(self.path, f"lacks the tensor record {name} (truncated?).", "the complete file")
        return torch.frombuffer(buffer, dtype=record.dtype)

    def check_view(self, key: str, ref: TensorRef) -> None:
        """Refuse a tensor whose dtype cannot be read or whose view does not lie inside its storage,
        before its storage is read."""
        if ref.dtype not in READABLE_DTYPES:
            raise ModelFileError(self.path, f"tensor {key!r} has dtype {ref.dtype}, a sub-byte, bit or quantized type "
                                 "this reader does not convert.", "LoRA tensors of floating-point or whole-byte "
                                 "integer dtypes")
        storage_bytes = ref.storage.nbytes
        if storage_bytes % ref.dtype.itemsize:
            raise ModelFileError(self.path, f"tensor {key!r} views a {storage_bytes}-byte storage as {ref.dtype}, "
                                 "which does not divide it.", "an intact checkpoint")
        elements = storage_bytes // ref.dtype.itemsize
        if ref.offset < 0 or any(d < 0 for d in ref.size) or any(s < 0 for s in ref.stride) \
                or len(ref.size) != len(ref.stride):
            raise ModelFileError(self.path, f"tensor {key!r} has size {ref.size}, stride {ref.stride} and offset "
                                 f"{ref.offset}.", "non-negative sizes, strides and offset, one stride per dimension")
        numel = 1
        for dim in ref.size:
            numel *= dim
            if numel > elements:
                raise ModelFileError(self.path, f"tensor {key!r} of size {ref.size} is larger than its storage of "
                                     f"{elements:,} elements (overlapping strides such as stride 0 would make a small "
                                     "file expand in memory).", "no tensor larger than the data it views")
        last = ref.offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride))
        if numel and last >= elements:
            raise ModelFileError(self.path, f"tensor {key!r} (size {ref.size}, stride {ref.stride}, offset {ref.offset}) "
                                 f"reaches element {last:,} of a storage of {elements:,}.",
                                 "every tensor inside its storage")

    def check_refs(self, refs: dict[str, TensorRef]) -> None:
        """Every check of ``materialize`` that reads no tensor data: each view, and each storage's
        record in the zip directory (its size, and the archive's inflation budget)."""
        for key, ref in refs.items():
            self.check_view(key, ref)
        for record in {ref.storage.key: ref.storage for ref in refs.values()}.values():
            if record.numel:
                name = f"{self.prefix}data/{record.key}"
                if self.zip.check_record(name, max_bytes=record.nbytes, expected_bytes=record.nbytes) is None:
                    raise ModelFileError(self.path, f"lacks the tensor record {name} (truncated?).",
                                         "the complete file")
        self.zip.inflated = 0  # checked: materialize charges them again as it reads them

    def materialize(self, refs: dict[str, TensorRef]) -> dict[str, torch.Tensor]:
        self.check_refs(refs)
        storages: dict[str, torch.Tensor] = {}
        out, copied = {}, 0
        viewed_bytes = sum(record.nbytes for record in {ref.storage for ref in refs.values()})
        for key, ref in refs.items():
            if ref.storage.key not in storages:
                storages[ref.storage.key] = self.read_storage(ref.storage)
            flat = storages[ref.storage.key]
            if ref.dtype != flat.dtype:
                flat = flat.view(torch.uint8).view(ref.dtype)
            tensor = flat.as_strided(ref.size, ref.stride, ref.offset)
            whole = ref.offset == 0 and tensor.is_contiguous() and tensor.numel() == flat.numel()
            if not whole:
                copied += tensor.numel() * ref.dtype.itemsize
                if copied > viewed_bytes:
                    raise ModelFileError(self.path, "its tensors are overlapping views that add up to more bytes "
                                         "than the data they view.", "LoRA tensors that each own their data")
                tensor = tensor.clone()
            out[key] = tensor
        return out

    def close(self) -> None:
        self.zip.close()


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


def load_checkpoint_tensors(path: str | os.PathLike, limits: CheckpointLimits | None = None) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a PyTorch zip checkpoint, keyed as stored (e.g.
    ``blocks.0.attn1.to_q.lora_A.default.weight``), read without executing any pickled code.

    Taken from ``checkpoint["state_dict"]["lora"]`` (WorldWander) when present, else from
    ``checkpoint["state_dict"]`` or the top level: every tensor there whose key mentions "lora",
    plus the ``*.alpha`` tensors. Other tensors (optimizer state...) are never read.
    Memory and time follow the file's real tensor bytes: the pickle, the zip records and every
    view are checked against ``limits`` and against the file before anything is read.
    Raises ModelFileError naming the file and the rule when it is missing, not a zip checkpoint,
    truncated, over a limit, or holds no LoRA tensors.
    """
    return _read_checkpoint(path, limits, lambda checkpoint, refs: checkpoint.materialize(refs))


def inspect_checkpoint_tensors(path: str | os.PathLike, limits: CheckpointLimits | None = None,
                               read=lambda key, ref: False) -> dict[str, TensorRef | torch.Tensor]:
    """What load_checkpoint_tensors would return, as unread TensorRefs (key -> storage, size, stride,
    dtype), after every check it makes that reads no tensor data: the zip, the pickle, each view,
    each storage record. Costs the pickle, not the tensors (a preflight check). The tensors for
    which ``read(key, ref)`` is true (small ones, such as alpha scalars) are read and returned."""
    def checked(checkpoint: _Checkpoint, refs: dict[str, TensorRef]) -> dict[str, TensorRef | torch.Tensor]:
        checkpoint.check_refs(refs)
        wanted = {key: ref for key, ref in refs.items() if read(key, ref)}
        return {**refs, **(checkpoint.materialize(wanted) if wanted else {})}

    return _read_checkpoint(path, limits, checked)


def _read_checkpoint(path, limits: CheckpointLimits | None, finish):
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such file.", _EXPECTED)
    limits = limits or CheckpointLimits()
    checkpoint = _Checkpoint(path, limits)
    try:
        container, where = _lora_container(checkpoint.read_structure(_TorchNames(limits)))
        refs = {k: v for k, v in container.items() if isinstance(k, str) and isinstance(v, TensorRef)}
        lora_refs = {k: v for k, v in refs.items() if _is_lora_key(k) or k.endswith(".alpha")}
        if not any(_is_lora_key(k) for k in lora_refs):
            raise ModelFileError(path, f"holds no LoRA tensors: {where} has {len(refs)} tensors and none has "
                                 "'lora' in its name.", _EXPECTED)
        return finish(checkpoint, lora_refs)
    finally:
        checkpoint.close()
