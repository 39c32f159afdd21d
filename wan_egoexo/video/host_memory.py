"""Host memory: how much the system can still hand out, and refusing work that would not fit before
anything is allocated. Reading clips (clip_reader, read_write) checks its frames against it."""

from __future__ import annotations

from ..errors import InputError


def available_memory() -> int | None:
    """Bytes the system can still hand out (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(size: int, what: str) -> None:
    """Refuse, before allocating, work that needs more than the free memory; the message says how much."""
    free = available_memory()
    if free is not None and size > free:
        raise InputError(f"out of memory: {what} needs {size / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
                         "are free; use fewer frames (--frames), a later --start-frame or a smaller size.")
