"""Atomic writes: a file (or a folder) is written under a temporary name beside its destination,
flushed to disk, then renamed into place, so a crash never leaves a half-written file under the
real name and the previous version stays intact until the new one is complete.

Leftovers of killed writers (kill -9, power loss) are swept by the next write into the same folder,
and only what this writer provably made is ever removed. A temporary name carries this pack's tag
and its writer: ``.<name>.wan_egoexo.<machine>.<pid>.<start>.<random>.partial[.ext]`` (``.old`` for a
previous version moved aside), where <name> is the destination's name cut to NAME_PART characters,
<machine> the host name and the pid namespace and <start> the process's start time (Linux /proc, in
clock ticks); a temporary folder also holds the marker file FOLDER_MARKER, and a folder without it is
never removed, whatever its name. Names without the tag (a user's ``.bashrc.old-1``, a ``.photos.old-2020/``
folder, leftovers of versions before the tag) are never touched. A tagged leftover is removed only when
its writer is provably gone: same machine, and that pid is not running or is a later process (another
start time). When that cannot be known (another host on a shared disk, a system without /proc or
kill(pid, 0)) it is removed only after STALE_AFTER_S without a change, far longer than any single write.

A write that fails for want of space or permission (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) raises
errors.WriteError naming the destination and what to change, not a raw OSError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .errors import InputError, WriteError

STALE_AFTER_S = 24 * 3600
TAG = "wan_egoexo"
FOLDER_MARKER = ".wan_egoexo-partial"  # inside every temporary folder this writer makes
NAME_PART = 64  # characters of the destination's name kept in a temporary name (which must fit NAME_MAX)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

_OWNED = re.compile(r"^\.(?P<name>.+)\." + TAG + r"\.(?P<machine>[A-Za-z0-9-]+_\d+)\.(?P<pid>\d+)\.(?P<start>\d+)"
                    r"\.[a-z0-9_]{8}\.(?P<kind>partial|old)(\.[^.]+)*$")


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _machine() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    try:  # a pid means something only inside its pid namespace (containers)
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        namespace = "0"
    return f"{host}_{namespace}"


def _owner() -> str:
    return f"{_machine()}.{os.getpid()}.{_start_ticks(os.getpid()) or 0}"


def _writer_alive(machine: str, pid: int, start: int) -> bool | None:
    """True/False when the writer's liveness can be known from here, None when it cannot."""
    if machine != _machine() or os.name != "posix":  # os.kill(pid, 0) on Windows would terminate it
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OverflowError, OSError):
        return None
    if start:
        ticks = _start_ticks(pid)
        return ticks is None or ticks == start
    return True


def _is_leftover(path: Path, now: float) -> bool:
    """Whether ``path`` is a temporary file or folder of this writer whose writer is gone (see the module
    docstring): the tag in its name, the marker inside a folder, and a dead (or long silent) writer."""
    owned = _OWNED.match(path.name)
    if owned is None:
        return False
    try:
        if path.is_dir() and not path.is_symlink() and not (path / FOLDER_MARKER).is_file():
            return False  # a folder this writer did not mark is never removed
    except OSError:
        return False
    alive = _writer_alive(owned["machine"], int(owned["pid"]), int(owned["start"]))
    if alive is not None:
        return not alive
    try:
        return now - path.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_partials(folder) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in ``folder`` that this writer provably made and whose
    writers are gone (see the module docstring); a leftover of a live writer is never touched. Returns what
    was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = [entry for entry in folder.iterdir() if entry.name.startswith(".") and f".{TAG}." in entry.name]
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        if not _is_leftover(path, now):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another run swept it first
            pass
        except OSError:
            continue
        removed.append(path)
    return removed


def check_file_name(path, name: str = "out") -> None:
    """A path the file system can hold: no NUL character, every part within the folder's name limit
    (usually 255 bytes). InputError names the input and the rule."""
    text = os.fspath(path)
    if "\0" in text:
        raise InputError(f"{name}: {text!r} holds a NUL character; expected a file name without it.")
    limit = 255
    with contextlib.suppress(OSError, ValueError, AttributeError):
        existing = Path(text).absolute().parent
        while not existing.exists():
            existing = existing.parent
        limit = os.pathconf(existing, "PC_NAME_MAX")
    for part in Path(text).parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise InputError(f"{name}: the name {part[:40]}... is {size} bytes long; expected at most {limit} bytes "
                             "per file or folder name on this file system (shorten it).")


def check_filename_prefix(prefix, name: str = "filename_prefix", reserve: int = 40) -> None:
    """A file name prefix (optionally with subfolders) that numbered names can be made from: a string without
    NUL whose every part, the last plus ``reserve`` bytes of numbering and suffix, fits 255 bytes."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise InputError(f"{name}: {prefix!r} is empty; expected a file name prefix such as 'WorldWander'.")
    if "\0" in prefix:
        raise InputError(f"{name}: {prefix!r} holds a NUL character; expected a file name prefix without it.")
    parts = [part for part in re.split(r"[\\/]", prefix) if part]
    for index, part in enumerate(parts):
        limit = 255 - (reserve if index == len(parts) - 1 else 0)
        size = len(os.fsencode(part))
        if size > limit:
            raise InputError(f"{name}: the part {part[:40]}... is {size} bytes long; expected at most {limit} bytes "
                             f"(file names are limited to 255 bytes, and {reserve} are kept for the number and "
                             "suffix added to it).")


def _tagged_prefix(destination: Path) -> str:
    return f".{destination.name[:NAME_PART]}.{TAG}.{_owner()}."


@contextlib.contextmanager
def disk_errors(destination, hint: str = "free some space or choose a writable folder"):
    """Turn a failed write for want of space or permission into errors.WriteError naming ``destination``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise as_write_error(exc, destination, hint) from None


def as_write_error(exc: OSError, destination, hint: str = "free some space or choose a writable folder") -> WriteError:
    """The WriteError for an OSError of DISK_ERRNOS met while writing ``destination``."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
              errno.EROFS: "the file system is read-only"}.get(exc.errno, "permission denied")
    return WriteError(f"{destination}: cannot be written ({reason}: {exc.strerror}); {hint}.", exc.errno)


def aside_path(path) -> Path:
    """A name beside ``path`` to move it to before deleting it (swept like a partial if we die meanwhile)."""
    path = Path(path)
    return path.with_name(f"{_tagged_prefix(path)}{secrets.token_hex(4)}.old")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finish_tree(path: Path) -> None:
    """Give a file, or a folder and everything in it, the permissions a plain open() would have (temporary
    files are created private), and flush the files to disk."""
    mask = _umask()
    entries = [path] if path.is_file() else [path, *path.rglob("*")]
    for entry in entries:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)
        if entry.is_file():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(destination, keep_suffix: bool = False):
    """Yield a temporary path in the destination's folder; on success it is flushed, given the permissions
    a plain open() would have, and renamed to ``destination`` (replacing it); on any exception it is
    removed and the destination is untouched. ``keep_suffix`` ends the temporary name with the
    destination's suffix (for writers, such as ffmpeg, that pick the format from it). Leftovers of
    killed writers in the folder are swept first. A full disk or a read-only folder is a WriteError."""
    destination = Path(destination)
    check_file_name(destination)
    with disk_errors(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_partials(destination.parent)
        suffix = ".partial" + (destination.suffix if keep_suffix else "")
        handle, temp_name = tempfile.mkstemp(prefix=_tagged_prefix(destination), suffix=suffix,
                                             dir=destination.parent)
        os.close(handle)
        temp = Path(temp_name)
        try:
            yield temp
            finish_tree(temp)
            os.replace(temp, destination)
            _fsync_dir(destination.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def _mark(folder: Path) -> None:
    (folder / FOLDER_MARKER).write_text(f"{folder.name}\n")


@contextlib.contextmanager
def atomic_folder(destination):
    """Yield a temporary folder beside ``destination``; on success its files are flushed and it is
    renamed to ``destination`` (an existing folder of that name is replaced); on failure it is removed.
    Leftovers of killed writers in the parent folder are swept first. A full disk or a read-only folder
    is a WriteError."""
    destination = Path(destination)
    check_file_name(destination)
    with disk_errors(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_partials(destination.parent)
        temp = Path(tempfile.mkdtemp(prefix=_tagged_prefix(destination), suffix=".partial",
                                     dir=destination.parent))
        try:
            _mark(temp)
            yield temp
            (temp / FOLDER_MARKER).unlink()
            finish_tree(temp)
            if destination.exists():
                # A folder cannot be replaced in one rename: move the old one aside first, mark it, remove it.
                old = aside_path(destination)
                os.replace(destination, old)
                os.replace(temp, destination)
                _mark(old)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, destination)
            _fsync_dir(destination.parent)
        except BaseException:
            if temp.exists() and not temp.is_symlink():
                shutil.rmtree(temp, ignore_errors=True)
            raise
