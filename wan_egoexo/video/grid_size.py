"""The size a clip is fitted to on the model grid (sides multiples of 32).

Automatic size: of the grid sizes within 10% of the trained pixel count (1280x704 = 901,120
pixels), the one whose aspect ratio is nearest the input's. Aspect errors under 0.5% (a few
pixels of a 1080p frame) count as equal, and among those the size nearest the trained pixel count
wins. So 1280x704 stays 1280x704, 1920x1080 becomes 1248x704 (0.3% of its width is cropped instead of
2.2% of its height at 1280x704), 1080x1920 becomes 704x1248 and a square clip 960x960.
"""

from __future__ import annotations

import math

GRID = 32  # 16x VAE compression times the 2x2 patch
TRAINED_SIZE = (1280, 704)  # (width, height) of the reference setting
TRAINED_PIXELS = TRAINED_SIZE[0] * TRAINED_SIZE[1]
PIXEL_TOLERANCE = 0.10  # "about the trained pixel count"
NEGLIGIBLE_ASPECT_ERROR = 0.005  # relative aspect errors below this are a few pixels: treated as equal


def aspect_error(width: float, height: float, source_width: float, source_height: float) -> float:
    """Relative difference between two aspect ratios (0.01 = 1%)."""
    return abs(math.log((width / height) / (source_width / source_height)))


def automatic_size(source_width: int, source_height: int) -> tuple[int, int]:
    """(width, height) on the grid for a source of this size; see the module docstring."""
    aspect = source_width / source_height
    low, high = TRAINED_PIXELS * (1 - PIXEL_TOLERANCE), TRAINED_PIXELS * (1 + PIXEL_TOLERANCE)
    best, best_key = None, None
    for height in range(GRID, int(high // GRID) + 1, GRID):  # the tallest size is one 32-pixel column wide
        for width in {max(GRID, math.floor(aspect * height / GRID) * GRID), math.ceil(aspect * height / GRID) * GRID}:
            if width < GRID or not low <= width * height <= high:
                continue
            error = aspect_error(width, height, source_width, source_height)
            key = (max(error, NEGLIGIBLE_ASPECT_ERROR), abs(math.log(width * height / TRAINED_PIXELS)), error)
            if best_key is None or key < best_key:
                best, best_key = (width, height), key
    if best is None:  # an aspect so extreme that no grid size is near the pixel count: one row of 32
        wide = source_width >= source_height
        side = max(GRID, round(TRAINED_PIXELS / GRID / GRID) * GRID)
        best = (side, GRID) if wide else (GRID, side)
    return best


def target_size(source_width: int, source_height: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Both given: used as is. One given: the other follows the source aspect, rounded to the grid.
    None: ``automatic_size``."""
    if width is not None and height is not None:
        return int(width), int(height)
    if width is not None:
        return int(width), max(GRID, round(width * source_height / source_width / GRID) * GRID)
    if height is not None:
        return max(GRID, round(height * source_width / source_height / GRID) * GRID), int(height)
    return automatic_size(source_width, source_height)
