"""Atomic writes: a file (or a folder) is written under a temporary name beside its destination,
flushed to disk, then renamed into place, so a crash never leaves a half-written file under the
real name and the previous version stays intact until the new one is complete.

Leftovers of killed writers (kill -9, power loss) are swept by the next write into the same folder.
A temporary name carries its writer: ``.<name>.<machine>.<pid>.<start>.<random>.partial[.ext]``,
where <machine> is the host name and the pid namespace and <start> the process's start time (Linux
/proc, in clock ticks). A leftover is removed only when its writer is provably gone: same machine,
and that pid is not running or is a later process (another start time). When that cannot be known
(another host on a shared disk, a system without /proc or kill(pid, 0), names from older versions)
it is removed only after STALE_AFTER_S without a change, far longer than any single write takes.
So a partial file of a run that is still alive is never deleted: liveness, not age, is the rule
wherever liveness can be checked, because a slow write can be any age.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 24 * 3600

_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<machine>[A-Za-z0-9-]+_\d+)\.(?P<pid>\d+)\.(?P<start>\d+)"
                    r"\.[a-z0-9_]{8}\.(?P<kind>partial|old)(\.[^.]+)?$")
_UNOWNED = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.partial(\.[^.]+)?|old-\d+)$")  # names before owners


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
    owned = _OWNED.match(path.name)
    if owned is None and _UNOWNED.match(path.name) is None:
        return False
    alive = _writer_alive(owned["machine"], int(owned["pid"]), int(owned["start"])) if owned else None
    if alive is not None:
        return not alive
    try:
        return now - path.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_partials(folder) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in ``folder`` whose writers are gone (see the module
    docstring); a leftover of a live writer is never touched. Returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = [entry for entry in folder.iterdir() if entry.name.startswith(".")]
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


def aside_path(path) -> Path:
    """A name beside ``path`` to move it to before deleting it (swept like a partial if we die meanwhile)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_owner()}.{secrets.token_hex(4)}.old")


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
    killed writers in the folder are swept first."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(destination.parent)
    suffix = ".partial" + (destination.suffix if keep_suffix else "")
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.{_owner()}.", suffix=suffix,
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


@contextlib.contextmanager
def atomic_folder(destination):
    """Yield a temporary folder beside ``destination``; on success its files are flushed and it is
    renamed to ``destination`` (an existing folder of that name is replaced); on failure it is removed.
    Leftovers of killed writers in the parent folder are swept first."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(destination.parent)
    temp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.{_owner()}.", suffix=".partial",
                                 dir=destination.parent))
    try:
        yield temp
        finish_tree(temp)
        if destination.exists():
            # A folder cannot be replaced in one rename: move the old one aside first.
            old = aside_path(destination)
            os.replace(destination, old)
            os.replace(temp, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, destination)
        _fsync_dir(destination.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
