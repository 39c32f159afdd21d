"""One run per output folder: an exclusive lock held for the whole run.

The lock is an operating-system lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a small
file that also records the holder (pid, host, start time, command). The system releases it when the
holder exits in any way (kill -9 included), so a lock file left by a dead process is simply taken over;
a second run on a folder whose holder is alive fails at once with a message naming the holder. Where
the file system cannot lock, a recorded holder on this host that is still running counts as the lock.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path

from wan_egoexo.errors import InputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderInUseError(InputError):
    """Another live run holds the lock."""


def _os_lock(fd: int) -> bool | None:
    """True when locked, False when another process holds it, None when the file system cannot lock."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        if exc.errno in _UNSUPPORTED:
            return None
        raise


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive_here(holder: dict) -> bool:
    """The recorded holder is a running process on this host (fallback when locks are unsupported)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder["pid"] == os.getpid():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it has not recorded itself yet)"
    text = f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


class FolderLock:
    """``with FolderLock(lock_file, "output_dir /runs/a"):`` holds the lock, or raises FolderInUseError.
    ``previous`` is the record of a dead holder whose lock file was taken over (None otherwise)."""

    def __init__(self, lock_file, what: str):
        self.path = Path(lock_file)
        self.what = what
        self.previous: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            locked = _os_lock(fd)
            holder = _read_holder(self.path)
            if locked is False or (locked is None and _alive_here(holder)):
                os.close(fd)
                raise FolderInUseError(f"{self.what} is in use by another run: {describe_holder(holder)}; lock file "
                                       f"{self.path}. Expected a folder no other run is writing: wait for that run to "
                                       "finish, or choose another folder.")
            try:  # the previous holder may have removed the file between our open and lock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self.previous = holder or None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: no one can lock the old file after this
        except OSError:
            pass  # Windows cannot remove an open file; the next run takes the file over
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_on_main(context, lock_file, what: str) -> FolderLock | None:
    """Take the lock on the main process of a (possibly distributed) run; every rank raises when it is
    held elsewhere. Prints a note when a dead run's lock file is taken over. Returns the held lock (main)."""
    lock, error = None, None
    if context.is_main:
        try:
            lock = FolderLock(lock_file, what).acquire()
        except FolderInUseError as exc:
            error = exc
    message = context.broadcast_object(None if error is None else str(error))
    if message is not None:
        raise error if error is not None else FolderInUseError(message)
    if lock is not None and lock.previous:
        print(f"note: {what}: took over the lock left by {describe_holder(lock.previous)}, which is no longer "
              "running.", file=sys.stderr)
    return lock
