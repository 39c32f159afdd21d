"""Atomic writes: a file (or a folder) is written under a temporary name beside its destination,
flushed to disk, then renamed into place, so a crash never leaves a half-written file under the
real name and the previous version stays intact until the new one is complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


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
    destination's suffix (for writers, such as ffmpeg, that pick the format from it)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".partial" + (destination.suffix if keep_suffix else "")
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix, dir=destination.parent)
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
    renamed to ``destination`` (an existing folder of that name is replaced); on failure it is removed."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        yield temp
        finish_tree(temp)
        if destination.exists():
            # A folder cannot be replaced in one rename: move the old one aside first.
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(temp, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, destination)
        _fsync_dir(destination.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def remove_partials(folder) -> list[Path]:
    """Delete leftovers of interrupted atomic writes (``.<name>.*.partial`` / ``.old-*``) in ``folder``."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if path.name.startswith(".") and (".partial" in path.name or ".old-" in path.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
