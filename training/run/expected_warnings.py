"""Warnings a training run expects, said once instead of at every step.

Known, harmless warnings of the libraries (bf16 autocast on the CPU makes torch's RMS norm fall back to
its unfused kernel and say so) are replaced by one note at the start of the run; any other warning
raised while training is shown once per message, however often the steps repeat it (Python's own
registries forget what they showed whenever a library touches the warning filters).
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import torch

# (message regex, the note printed once instead, when it applies)
_CPU_BF16 = (r"Mismatch dtype between input and weight",
             "note: bf16 autocast on the CPU: some norms run unfused (slower); --train.mixed_precision no "
             "trains in fp32 instead.")


def expected_notes(device: torch.device, mixed_precision: str) -> list[tuple[str, str]]:
    """(warning message regex, note) pairs this run is known to raise."""
    notes = []
    if device.type == "cpu" and mixed_precision == "bf16":
        notes.append(_CPU_BF16)
    return notes


@contextlib.contextmanager
def training_warnings(device: torch.device, mixed_precision: str, announce: bool = True):
    """Inside: the expected warnings are silenced (their notes printed once, on the main process when
    ``announce``) and any other warning is shown once per (category, message)."""
    notes = expected_notes(device, mixed_precision)
    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        for pattern, _note in notes:
            warnings.filterwarnings("ignore", message=pattern)
        # Python's own "once" / per-location registries are cleared whenever any code changes the filters
        # (libraries do, inside a step), so repeats are dropped here, where every shown warning passes.
        shown = set()
        show = warnings.showwarning

        def show_once(message, category, filename, lineno, file=None, line=None):
            key = (category, str(message))
            if key not in shown:
                shown.add(key)
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_once
        if announce:
            for _pattern, note in notes:
                print(note, file=sys.stderr)
        yield
