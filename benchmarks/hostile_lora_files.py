"""Hostile LoRA files of issue 18: tiny files whose cost was unbounded (a backtracking regular
expression in the adapter metadata, dict keys whose hashes all collide, a deflate stream that
honestly inflates 1000:1) or whose errors were raw (bad metadata values, huge integers, an empty
file). Each builder writes one file and returns its path; the benchmark (bench_hostile_files)
measures what it costs a reader, the tests assert the named error.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from benchmarks.hostile_files import (LORA_B_KEY, LORA_KEY, StorageRecord, TensorRecord, lora_pair, pickle_checkpoint,
                                      write_checkpoint, write_safetensors_raw)

# Python hashes an int modulo this Mersenne prime (sys.hash_info.modulus): 1 + k * P all hash to 1.
HASH_MODULUS = 2**61 - 1
REDOS_PATTERN = "((.*)*)*Z"
MODULE = "blocks.0.attn1.to_q"


def _one(value: float = 0.5) -> bytes:
    return struct.pack("<f", value)


def metadata_lora_safetensors(path, metadata, raw: str | None = None) -> Path:
    """A 1x1 rank-1 PEFT LoRA for blocks.0.attn1.to_q whose ``lora_adapter_metadata`` is ``metadata``
    (as JSON, or the string ``raw`` as it is)."""
    entry = {"dtype": "F32", "shape": [1, 1]}
    header = {"__metadata__": {"lora_adapter_metadata": raw if raw is not None else json.dumps(metadata)},
              f"transformer.{MODULE}.lora_A.weight": {**entry, "data_offsets": [0, 4]},
              f"transformer.{MODULE}.lora_B.weight": {**entry, "data_offsets": [4, 8]}}
    return write_safetensors_raw(path, header, _one() + _one())


def redos_alpha_pattern_safetensors(path, pattern: str = REDOS_PATTERN) -> Path:
    """An alpha_pattern key that a backtracking regex engine takes hours on (321 bytes)."""
    return metadata_lora_safetensors(path, {"lora_alpha": 1, "alpha_pattern": {pattern: 2}})


BAD_METADATA = {  # name -> (metadata, the fragment the error names)
    "lora_alpha 'nan'": ({"lora_alpha": "nan"}, "lora_alpha"),
    "lora_alpha NaN": ({"lora_alpha": float("nan")}, "lora_alpha"),
    "lora_alpha 1e400 (inf)": ({"lora_alpha": 1e400}, "lora_alpha"),
    "lora_alpha a list": ({"lora_alpha": [1]}, "lora_alpha"),
    "alpha_pattern a list": ({"alpha_pattern": [1, 2]}, "alpha_pattern"),
    "alpha_pattern value 'x'": ({"alpha_pattern": {MODULE: "x"}}, "alpha_pattern"),
    "alpha_pattern key '('": ({"alpha_pattern": {"(": 2}}, "alpha_pattern"),
    "rank_pattern rank -4": ({"rank_pattern": {MODULE: -4}}, "rank_pattern"),
    "r 10**30": ({"r": 10**30}, "'r'"),
    "use_rslora 'yes'": ({"use_rslora": "yes"}, "use_rslora"),
    "target_modules 7": ({"target_modules": 7}, "target_modules"),
}


def bad_metadata_safetensors(path, name: str) -> Path:
    return metadata_lora_safetensors(path, BAD_METADATA[name][0])


def huge_alpha_safetensors(path, digits: int = 4000) -> Path:
    """lora_alpha written as an integer of ``digits`` digits (float() of it overflows)."""
    return metadata_lora_safetensors(path, None, raw='{"lora_alpha": 1' + "0" * (digits - 1) + "}")


def huge_dims_safetensors(path, digits: int = 4299) -> Path:
    """Two dims of ``digits`` decimal digits each (just under Python's 4,300-digit conversion limit):
    their product does not fit the limit when a message prints it."""
    dim = "1" + "0" * (digits - 1)
    raw = ('{"a.lora_A.weight": {"dtype": "F32", "shape": [%s, %s], "data_offsets": [0, 16]}}' % (dim, dim)).encode()
    return write_safetensors_raw(path, {}, b"\0" * 16, header_bytes=raw)


# ------------------------------------------------------------------ .ckpt files

def _ckpt_with_prefix(path, prefix: bytes, suffix: bytes = b"0", deflate: bool = True) -> Path:
    """A valid small LoRA checkpoint whose pickle first builds ``prefix`` (then drops it with ``suffix``)."""
    lora, records = lora_pair(TensorRecord(StorageRecord("0", "FloatStorage", 4), (2, 2), (2, 1)),
                              {"0": struct.pack("<4f", 1, 2, 3, 4)})
    body = pickle_checkpoint({"state_dict": {"lora": lora}})
    return write_checkpoint(path, body[:2] + prefix + suffix + body[2:], records, deflate_pickle=deflate)


def _long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def colliding_keys(count: int) -> list[int]:
    return [1 + k * HASH_MODULUS for k in range(count)]


def colliding_dict_ckpt(path, count: int = 40_000) -> Path:
    """A dict of ``count`` int keys that all hash to 1: EMPTY_DICT, MARK, (LONG1 key, NONE) x count, SETITEMS."""
    return _ckpt_with_prefix(path, b"}(" + b"".join(_long1(k) + b"N" for k in colliding_keys(count)) + b"u")


def colliding_set_ckpt(path, count: int = 40_000) -> Path:
    """The same keys as members of a set (EMPTY_SET, MARK, LONG1 x count, ADDITEMS)."""
    return _ckpt_with_prefix(path, b"\x8f(" + b"".join(_long1(k) for k in colliding_keys(count)) + b"\x90")


def colliding_memo_ckpt(path, count: int = 40_000) -> Path:
    """``count`` text PUTs to memo slots that all hash to 1 (``p<index>\\n`` takes any integer)."""
    return _ckpt_with_prefix(path, b"N" + b"".join(b"p%d\n" % k for k in colliding_keys(count)))


def colliding_tuple_keys_ckpt(path, count: int = 2_000) -> Path:
    """Dict keys that are pairs of ints: a tuple's hash is computed from its items' hashes, so pairs of
    ints are as open to crafted collisions as ints (here they merely fill a dict)."""
    pairs = b"".join(b"(" + _long1(k) + _long1(k + 1) + b"tN" for k in range(count))
    return _ckpt_with_prefix(path, b"}(" + pairs + b"u")


def hex_int_offset_ckpt(path, hex_digits: int = 5000) -> Path:
    """A tensor offset written as a text INT of ``hex_digits`` hex digits (base 16 has no digit limit)."""
    marker = 0x1234567
    a = TensorRecord(StorageRecord("0", "FloatStorage", 4), (2, 2), (2, 1), offset=marker)
    lora, records = lora_pair(a, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    body = pickle_checkpoint({"state_dict": {"lora": lora}})
    packed = b"J" + struct.pack("<i", marker)
    assert body.count(packed) == 1
    body = body.replace(packed, b"I0x" + b"f" * hex_digits + b"\n")
    return write_checkpoint(path, body, records)


def inflating_ckpt(path, inflated_mib: int = 1024) -> Path:
    """A LoRA checkpoint whose one storage record is ``inflated_mib`` MiB of zeros, honestly deflated
    (about 1000:1, so a 1 MiB file): every size in the directory is true."""
    size = inflated_mib << 20
    a = TensorRecord(StorageRecord("0", "ByteStorage", size), (2, size // 2), (size // 2, 1))
    lora = {LORA_KEY: a, LORA_B_KEY: TensorRecord(StorageRecord("b", "FloatStorage", 4), (2, 2), (2, 1))}
    path = Path(path)
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        archive.writestr("archive/data.pkl", pickle_checkpoint({"state_dict": {"lora": lora}}))
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/data/b", struct.pack("<4f", 0.5, -0.5, 0.25, -0.25))
        info = zipfile.ZipInfo("archive/data/0", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 9
        chunk = bytes(16 << 20)
        with archive.open(info, "w", force_zip64=True) as handle:
            for _ in range(size // len(chunk)):
                handle.write(chunk)
    return path


def empty_file(path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path
