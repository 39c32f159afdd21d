"""Hostile model files, rebuilt from issue 11's reports: tiny files that ask a reader for gigabytes,
minutes, or a code path that ends in a raw traceback. The benchmark (bench_hostile_files) measures
what each costs a reader; the tests assert that each is refused with a named error.

Every builder writes one file and returns its path. The ``.ckpt`` files are written by hand (a zip
with ``<dir>/data.pkl`` and ``<dir>/data/<key>`` records, as torch.save lays them out) so that each
one holds exactly the fault it is named for and nothing else.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import torch

LORA_KEY = "blocks.0.attn1.to_q.lora_A.default.weight"
LORA_B_KEY = "blocks.0.attn1.to_q.lora_B.default.weight"


class StorageRecord:
    """A storage the pickle points at through a persistent id (torch.save's ``("storage", ...)``)."""

    def __init__(self, key: str, storage_type: str = "FloatStorage", numel: int = 0):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class TensorRecord:
    """Pickles as torch's tensor rebuild call: v2 (dtype from the storage type) or v3 (explicit dtype)."""

    def __init__(self, storage: StorageRecord, size, stride, offset: int = 0, dtype: torch.dtype | None = None):
        self.storage, self.size, self.stride, self.offset, self.dtype = storage, tuple(size), tuple(stride), offset, dtype

    def __reduce__(self):
        hooks = collections.OrderedDict()
        if self.dtype is None:
            return torch._utils._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, hooks)
        return torch._utils._rebuild_tensor_v3, (self.storage, self.offset, self.size, self.stride, False, hooks,
                                                 self.dtype)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRecord):
            storage_type = torch.UntypedStorage if obj.storage_type == "UntypedStorage" else getattr(torch, obj.storage_type)
            return "storage", storage_type, obj.key, "cpu", obj.numel
        return None


def pickle_checkpoint(structure) -> bytes:
    """The pickle torch.save would write for ``structure`` (protocol 2), with the records above."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(structure)
    return buffer.getvalue()


def write_checkpoint(path, pickled: bytes, records: dict[str, bytes], deflate_pickle: bool = False) -> Path:
    """A torch zip checkpoint: ``archive/data.pkl``, ``archive/byteorder`` and ``archive/data/<key>``."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled,
                         compress_type=zipfile.ZIP_DEFLATED if deflate_pickle else zipfile.ZIP_STORED)
        archive.writestr("archive/byteorder", b"little")
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def lora_checkpoint(structure_lora: dict, records: dict[str, bytes], path) -> Path:
    return write_checkpoint(path, pickle_checkpoint({"state_dict": {"lora": structure_lora}}), records)


def lora_pair(a_record: TensorRecord, records: dict[str, bytes]) -> tuple[dict, dict[str, bytes]]:
    """``a_record`` as the A half of a LoRA module, with a valid 2x2 float32 B half beside it (record "b")."""
    b_storage = StorageRecord("b", "FloatStorage", 4)
    lora = {LORA_KEY: a_record, LORA_B_KEY: TensorRecord(b_storage, (2, 2), (2, 1))}
    return lora, {**records, "b": struct.pack("<4f", 0.5, -0.5, 0.25, -0.25)}


def patch_zip_member(path, member: str, *, flags: int | None = None, method: int | None = None,
                     size: int | None = None, file_size: int | None = None) -> None:
    """Edit one member's general-purpose flags, compression method or declared sizes (``size``: both
    the compressed and uncompressed sizes; ``file_size``: the uncompressed size only), in its local
    header and in the central directory, leaving its bytes as they are."""
    data = bytearray(Path(path).read_bytes())
    name = member.encode()
    # (signature, where the name length is, where the name starts, where flags / method / sizes are)
    for signature, length_at, name_at, (flags_at, method_at, sizes_at) in (
            (b"PK\x03\x04", 26, 30, (6, 8, 18)),  # local headers
            (b"PK\x01\x02", 28, 46, (8, 10, 20))):  # central directory
        position = 0
        while (position := data.find(signature, position)) >= 0:
            name_length = struct.unpack_from("<H", data, position + length_at)[0]
            if data[position + name_at: position + name_at + name_length] == name:
                _patch(data, position + flags_at, position + method_at, position + sizes_at, flags, method, size,
                       file_size)
            position += 4
    Path(path).write_bytes(bytes(data))


def _patch(data: bytearray, flags_at: int, method_at: int, sizes_at: int, flags, method, size, file_size) -> None:
    if flags is not None:
        struct.pack_into("<H", data, flags_at, flags)
    if method is not None:
        struct.pack_into("<H", data, method_at, method)
    if size is not None:
        struct.pack_into("<II", data, sizes_at, size, size)
    if file_size is not None:
        struct.pack_into("<I", data, sizes_at + 4, file_size)


# ------------------------------------------------------------------ .ckpt files from the issue

def stride0_ckpt(path, gib: int = 2) -> Path:
    """One float32 in the file; the tensor views it with stride 0 as ``gib`` GiB (a clone allocates it all)."""
    storage = StorageRecord("0", "FloatStorage", 1)
    columns = gib * (1 << 28) // 2
    return lora_checkpoint(*lora_pair(TensorRecord(storage, (2, columns), (0, 0)), {"0": struct.pack("<f", 1.0)}), path)


def global_flood_ckpt(path, count: int = 1_000_000, distinct: bool = False) -> Path:
    """A valid small LoRA checkpoint whose pickle first names ``count`` globals, kept alive in a list
    (EMPTY_LIST, MARK, GLOBAL x count, APPENDS, POP), deflated so the file stays a few KB."""
    lora, records = _small_lora()
    body = pickle_checkpoint({"state_dict": {"lora": lora}})
    flood = b"](" + b"".join(b"cevil\nName%d\n" % (i if distinct else 0) for i in range(count)) + b"e0"
    return write_checkpoint(path, body[:2] + flood + body[2:], records, deflate_pickle=True)


def memo_index_ckpt(path, index: int = 1 << 28) -> Path:
    """A 20-byte pickle that stores one value at memo slot ``index`` (a C unpickler sizes its memo
    table by the index: 2**28 -> 4 GiB of pointers)."""
    pickled = b"\x80\x02N" + b"r" + struct.pack("<I", index) + b"0}q\x00."
    return write_checkpoint(path, pickled, {})


def huge_member_ckpt(path, gib: int = 3) -> Path:
    """A valid small checkpoint whose tensor record claims ``gib`` GiB in the zip directory (and in its storage)."""
    declared = gib << 30
    storage = StorageRecord("0", "ByteStorage", declared)
    path = lora_checkpoint(*lora_pair(TensorRecord(storage, (2, declared // 2), (declared // 2, 1)), {"0": b"\0" * 16}),
                           path)
    patch_zip_member(path, "archive/data/0", size=declared)
    return path


def deflate_bomb_ckpt(path, gib: int = 1) -> Path:
    """A tensor record deflated to a few bytes whose directory claims ``gib`` GiB uncompressed (more
    than deflate can produce from them)."""
    declared = gib << 30
    storage = StorageRecord("0", "ByteStorage", declared)
    lora, records = lora_pair(TensorRecord(storage, (2, declared // 2), (declared // 2, 1)), {"0": b"\0" * 4096})
    path = Path(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_checkpoint({"state_dict": {"lora": lora}}))
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data, compress_type=zipfile.ZIP_DEFLATED)
    patch_zip_member(path, "archive/data/0", file_size=declared)
    return path


def _small_lora() -> tuple[dict, dict[str, bytes]]:
    return lora_pair(TensorRecord(StorageRecord("0", "FloatStorage", 4), (2, 2), (2, 1)),
                     {"0": struct.pack("<4f", 1, 2, 3, 4)})


def _small_lora_ckpt(path) -> Path:
    return lora_checkpoint(*_small_lora(), path)


def encrypted_member_ckpt(path) -> Path:
    """The pickle record is flagged as encrypted (zip's traditional PKWARE encryption)."""
    path = _small_lora_ckpt(path)
    patch_zip_member(path, "archive/data.pkl", flags=0x1)
    return path


def ppmd_member_ckpt(path) -> Path:
    """The pickle record claims compression method 98 (PPMd), which Python's zipfile cannot read."""
    path = _small_lora_ckpt(path)
    patch_zip_member(path, "archive/data.pkl", method=98)
    return path


def subbyte_dtype_ckpt(path, dtype: torch.dtype = torch.uint4) -> Path:
    """A LoRA tensor with a sub-byte dtype (torch.save itself cannot write these)."""
    storage = StorageRecord("0", "UntypedStorage", 4)
    return lora_checkpoint(*lora_pair(TensorRecord(storage, (2, 2), (2, 1), dtype=dtype), {"0": bytes(range(4))}),
                           path)


# ------------------------------------------------------------------ safetensors files

def write_safetensors_raw(path, header: dict, data: bytes = b"", header_bytes: bytes | None = None) -> Path:
    """A safetensors file with exactly this header (and optional padding to a chosen header size)."""
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path = Path(path)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def unknown_dtype_safetensors(path) -> Path:
    return write_safetensors_raw(path, {"w.lora_A.weight": {"dtype": "Q4_K", "shape": [2, 2],
                                                            "data_offsets": [0, 4]}}, b"\0" * 4)


def overlapping_offsets_safetensors(path) -> Path:
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    return write_safetensors_raw(path, {"a.lora_A.weight": entry, "a.lora_B.weight": dict(entry)}, b"\0" * 16)


def reversed_offsets_safetensors(path) -> Path:
    return write_safetensors_raw(path, {"a.lora_A.weight": {"dtype": "F32", "shape": [2, 2],
                                                            "data_offsets": [16, 0]}}, b"\0" * 16)


def shape_offset_mismatch_safetensors(path) -> Path:
    """A tensor whose shape asks for 4 TB while its offsets hold 16 bytes."""
    return write_safetensors_raw(path, {"a.lora_A.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                                                            "data_offsets": [0, 16]}}, b"\0" * 16)


def huge_header_safetensors(path, mib: int = 100) -> Path:
    """A header of ``mib`` MiB: one real entry padded with spaces (valid JSON)."""
    text = json.dumps({"a.lora_A.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return write_safetensors_raw(path, {}, b"\0" * 4, header_bytes=text + b" " * ((mib << 20) - len(text)))


def wrong_shape_transformer_file(folder) -> Path:
    """The tiny transformer (real single-file layout) with ``blocks.1.self_attn.q.weight`` one row too tall."""
    from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file  # noqa: PLC0415

    good = Path(folder) / "good_transformer.safetensors"
    save_transformer_single_file(build_tiny_transformer(0), good, prefix="model.diffusion_model.")
    return wrong_shape_transformer(good, Path(folder) / "wan2.2_ti2v_5B_fp16.safetensors")


def wrong_shape_transformer(source, path, key_suffix: str = "blocks.1.self_attn.q.weight") -> Path:
    """A copy of a single-file transformer with one tensor one row taller than its model needs."""
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    tensors = load_file(str(source))
    key = next(k for k in tensors if k.endswith(key_suffix))
    tensors[key] = torch.cat([tensors[key], tensors[key][:1]])
    save_file(tensors, str(path))
    return Path(path)
