"""The ranges of the numbers a user gives, and the two checks that apply them.

Every number a user gives (cfg, shift, denoise, steps, seed, LoRA strength) must be finite and
inside a stated range, checked before any model loads. The ranges are ComfyUI's own widget ranges
for the same quantities (KSampler cfg 0-100, ModelSamplingSD3 shift 0-100, LoraLoader strength
-100-100), so a value the node pack accepts is one ComfyUI accepts too. Plain Python (no torch), so
the command line refuses a bad option while it parses.
"""

from __future__ import annotations

import math
import operator

from .errors import InputError

CFG_RANGE = (0.0, 100.0)
SHIFT_RANGE = (0.0, 100.0)  # the low end excluded: shift must be > 0
LORA_STRENGTH_RANGE = (-100.0, 100.0)
STEPS_RANGE = (1, 1000)
SEED_RANGE = (0, 2**64 - 1)
# Frames of one clip inside ComfyUI (Load Video's frames input, an IMAGE source of In-Context): 4k+1, about
# two minutes at 8 fps, sampled in sliding windows. Longer clips go through the command line.
MAX_CLIP_FRAMES = 1001


def check_clip_frames(count: int, name: str = "source") -> None:
    """An IMAGE batch handed to In-Context holds at most MAX_CLIP_FRAMES frames (checked before any encode)."""
    if int(count) > MAX_CLIP_FRAMES:
        raise InputError(f"{name}: {int(count):,} frames; expected at most {MAX_CLIP_FRAMES} (about two minutes at "
                         "8 fps). Load fewer frames (WorldWander Load Video's frames, or a later start_frame), or "
                         "translate longer clips with `python -m wan_egoexo translate` (sliding windows).")


def finite_number(name: str, value, low: float, high: float, *, low_open: bool = False, hint: str = "") -> float:
    """``value`` as a float when it is a finite real number in [low, high] ((low, high] with
    ``low_open``); else InputError naming ``name``, the value and the range."""
    try:
        number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    inside = (number > low if low_open else number >= low) and number <= high
    if not math.isfinite(number) or not inside:
        bracket = "(" if low_open else "["
        raise InputError(f"{name}: expected a finite number in {bracket}{low:g}, {high:g}]{hint}, got {value!r}.")
    return number


def whole_number(name: str, value, low: int, high: int) -> int:
    """``value`` as an int when it is a whole number (not a bool, not a float) in [low, high]."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or not low <= number <= high:
        raise InputError(f"{name}: expected a whole number from {low} to {high}, got {value!r}.")
    return number


def check_lora_strength(strength) -> float:
    """A LoRA strength: finite, within LORA_STRENGTH_RANGE (0 switches the LoRA off)."""
    return finite_number("strength", strength, *LORA_STRENGTH_RANGE, hint=" (e.g. 1.0; 0 turns the LoRA off)")
