"""A zip archive from an untrusted file, read so that its cost follows the file: the number of
entries is read from the end record before ``zipfile`` parses the directory, and every record is
checked against the archive (not encrypted, stored or deflated, a declared size its compressed bytes
can really hold) before a byte of it is read. Every refusal is a ModelFileError naming the file.

The data records read from one archive (the tensor storages) may add up to at most MAX_INFLATION
times the file's size: each record's declared size is checked against what is left of that budget
before it is read. (The pickle is bounded on its own: its size limit and the interpreter's.)

Why: ``zipfile`` trusts the directory. A 669-byte file whose directory claims a 3 GiB record made
the checkpoint reader allocate 3 GiB before failing; encrypted and PPMd records ended in a raw
RuntimeError / NotImplementedError.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

from ..errors import ModelFileError

# Deflate's best case codes a 258-byte match in about 2 bits, so no deflate stream expands by more
# than 1032:1 (zlib's documented limit): a record that claims more than that is lying.
DEFLATE_MAX_RATIO = 1032
# What all the data records read from one archive may add up to: a small multiple of the file's size
# (plus a floor for tiny files). torch.save stores its records uncompressed, so a checkpoint's
# records hold at most the file's size; a deflated one that honestly expands 1000:1 (a 1 MB file, a
# 1 GiB tensor) is refused before it is inflated.
MAX_INFLATION = 4
INFLATION_FLOOR = 1 << 20
_LOCAL_HEADER_BYTES = 30
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"
_END_SEARCH_BYTES = 22 + 0xFFFF  # the end record plus the longest archive comment
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, struct.error, UnicodeDecodeError,
               NotImplementedError, OverflowError, RuntimeError)
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 98: "PPMd", 9: "deflate64", 93: "zstd"}


def _declared_entries(path: Path, size: int) -> int | None:
    """The entry count the end-of-central-directory record declares (zip64 aware); None if absent."""
    with open(path, "rb") as handle:
        start = max(0, size - _END_SEARCH_BYTES)
        handle.seek(start)
        tail = handle.read()
        at = tail.rfind(_END_RECORD)
        if at < 0 or at + 22 > len(tail):
            return None
        entries = struct.unpack_from("<H", tail, at + 10)[0]
        if entries != 0xFFFF or at < 20 or tail[at - 20: at - 16] != _ZIP64_LOCATOR:
            return entries
        (record_at,) = struct.unpack_from("<Q", tail, at - 12)
        if record_at + 56 > size:
            return None
        handle.seek(record_at)
        record = handle.read(56)
        if record[:4] != _ZIP64_END_RECORD:
            return None
        return struct.unpack_from("<Q", record, 32)[0]


class CheckedZip:
    """An open zip archive whose records are checked before they are read."""

    def __init__(self, path, expected: str, max_entries: int = 100_000):
        self.path, self.expected = Path(path), expected
        self.size = self.path.stat().st_size
        self.budget = max(MAX_INFLATION * self.size, INFLATION_FLOOR)
        self.inflated = 0  # bytes of the records read so far
        entries = _declared_entries(self.path, self.size)
        if entries is not None and entries > max_entries:
            raise ModelFileError(self.path, f"is a zip archive of {entries:,} records; at most {max_entries:,} are "
                                 "read (a checkpoint has one per tensor storage).", expected)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except _ZIP_ERRORS as exc:
            raise ModelFileError(self.path, f"is truncated or corrupted: its zip directory cannot be read ({exc}); "
                                 "an incomplete download?", "the complete file") from None
        if len(self.zip.infolist()) > max_entries:
            self.zip.close()
            raise ModelFileError(self.path, f"is a zip archive of more than {max_entries:,} records.", expected)

    def names(self) -> list[str]:
        return self.zip.namelist()

    def checked_info(self, name: str, max_bytes: int | None = None) -> zipfile.ZipInfo | None:
        """The record ``name`` after every check that needs no read; None when there is no such record."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            return None
        if info.flag_bits & 0x1:
            raise ModelFileError(self.path, f"record {name} is encrypted.", "an unencrypted checkpoint (torch.save "
                                 "writes none)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise ModelFileError(self.path, f"record {name} is compressed with {method}.",
                                 "records stored or deflated (torch.save stores them)")
        room = self.size - info.header_offset - _LOCAL_HEADER_BYTES - len(info.orig_filename.encode("utf-8", "replace"))
        if info.compress_size > room:
            raise ModelFileError(self.path, f"record {name} claims {info.compress_size:,} bytes, but only {max(room, 0):,} "
                                 "follow it in the file (a lying or truncated zip directory).", "the complete file")
        possible = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
            max(info.compress_size, 1) * DEFLATE_MAX_RATIO
        if info.file_size > possible:
            raise ModelFileError(self.path, f"record {name} claims {info.file_size:,} bytes from {info.compress_size:,} "
                                 f"{'stored' if info.compress_type == zipfile.ZIP_STORED else 'deflated'} bytes, "
                                 f"more than they can hold (at most {possible:,}).", "an intact zip directory")
        if max_bytes is not None and info.file_size > max_bytes:
            raise ModelFileError(self.path, f"record {name} is {info.file_size:,} bytes; at most {max_bytes:,} are read.",
                                 self.expected)
        return info

    def check_record(self, name: str, max_bytes: int, expected_bytes: int | None = None,
                     budgeted: bool = True) -> zipfile.ZipInfo | None:
        """Every check of ``read`` that needs no read (checked_info, the expected size, and, when
        ``budgeted``, the archive's inflation budget, which this record's size is then charged
        against); None when absent."""
        info = self.checked_info(name, max_bytes)
        if info is None:
            return None
        if expected_bytes is not None and info.file_size != expected_bytes:
            raise ModelFileError(self.path, f"record {name} holds {info.file_size:,} bytes, but its tensor storage "
                                 f"needs {expected_bytes:,}.", "an intact checkpoint")
        if budgeted and self.inflated + info.file_size > self.budget:
            raise ModelFileError(self.path, f"record {name} inflates to {info.file_size:,} bytes, which brings the "
                                 f"records read to {self.inflated + info.file_size:,} bytes from a {self.size:,}-byte "
                                 f"file (at most {MAX_INFLATION} times its size are read; torch.save stores records "
                                 "uncompressed).", f"{self.expected}, whose records hold at most {MAX_INFLATION} times "
                                 "the file's size")
        if budgeted:
            self.inflated += info.file_size
        return info

    def read(self, name: str, max_bytes: int, expected_bytes: int | None = None,
             writable: bool = False, budgeted: bool = True) -> bytes | bytearray | None:
        """The bytes of record ``name`` (None when absent), at most ``max_bytes`` and, when given,
        exactly ``expected_bytes``; nothing larger than the checked size is ever allocated.
        ``writable`` returns a bytearray (for torch.frombuffer); ``budgeted``: charged against the
        inflation budget (False for records bounded otherwise, such as the pickle)."""
        info = self.check_record(name, max_bytes, expected_bytes, budgeted)
        if info is None:
            return None
        try:
            with self.zip.open(info) as handle:
                if writable:
                    data = bytearray(info.file_size)
                    got = handle.readinto(data)
                else:
                    data = handle.read(info.file_size)
                    got = len(data)
                extra = handle.read(1)
        except _ZIP_ERRORS as exc:
            raise ModelFileError(self.path, f"is truncated or corrupted: record {name} cannot be read ({exc}).",
                                 "the complete file") from None
        if got != info.file_size or extra:
            raise ModelFileError(self.path, f"is truncated or corrupted: record {name} does not hold the "
                                 f"{info.file_size:,} bytes its directory entry says.", "the complete file")
        return data

    def close(self) -> None:
        self.zip.close()
