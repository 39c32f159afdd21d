"""Peak resident-memory growth of a block of code in this process (Linux /proc), cheap enough to wrap
hundreds of small reads: no garbage collection, only the kernel's high-water mark reset and read."""

from __future__ import annotations

import contextlib


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def peak_rss_growth():
    """Yields a dict whose "bytes" is, on exit, the peak RSS reached inside the block minus the RSS at
    its start (0 where /proc/self/clear_refs cannot reset the high-water mark)."""
    result = {"bytes": 0}
    start = _status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
    except OSError:
        start = None
    yield result
    peak = _status_bytes("VmHWM")
    if start is not None and peak is not None:
        result["bytes"] = max(0, peak - start)
