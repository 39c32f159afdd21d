"""Declarative LoRA state: make a transformer carry exactly a given list of (file, strength).

ComfyUI re-runs the sampler with whatever LoRA chain the graph holds now; calling this first
makes the adapters match that chain (loading new files, changing strengths, removing the rest),
so strengths never accumulate across runs and the base weights are never written.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

from ..option_ranges import check_lora_strength


def adapter_name_for(path: str | os.PathLike) -> str:
    """A stable adapter name for a file: changes when the file at that path is replaced."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
        stamp = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
    except OSError:
        stamp = str(resolved)
    digest = hashlib.sha1(stamp.encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in resolved.stem)[:40] or "lora"
    return f"{stem}-{digest}"


def lora_chain(loras) -> OrderedDict[str, tuple[str, float]]:
    """[(path, strength), ...] as {adapter name: (path, total strength)}: the same file twice adds
    its strengths, the order of first appearance is kept."""
    chain: OrderedDict[str, tuple[str, float]] = OrderedDict()
    for path, strength in loras:
        name = adapter_name_for(path)
        previous = chain[name][1] if name in chain else 0.0
        chain[name] = (str(path), previous + check_lora_strength(strength))
    return chain


def activate_loras(transformer, loras) -> list[str]:
    """Make ``loras`` ([(path, strength), ...]; the same file twice adds its strengths) the exact set
    of unfused LoRAs on ``transformer``. Adapters not in the list are removed. Returns the adapter names."""
    from .adapters import active_loras, apply_lora, remove_loras, set_lora_strength  # noqa: PLC0415  (peft)

    wanted = lora_chain(loras)
    current = active_loras(transformer)
    stale = [name for name in current if name not in wanted]
    if stale:
        remove_loras(transformer, stale)
    for name, (path, strength) in wanted.items():
        if name in current:
            if current[name] != strength:
                set_lora_strength(transformer, name, strength)
        else:
            apply_lora(transformer, path, strength, name=name)
    return list(wanted)
