"""A small synthetic ego/exo dataset for tests, demos and the benchmark: coloured shapes moving
over a textured floor, filmed by a fixed "exo" camera (the whole scene) and an "ego" camera riding
on the "person" (a zoomed window that follows it), plus a reference image of the person.

Deterministic for a seed. Written in our layout (ego/ exo/ reference/) or the authors'
(First_Video/ Third_Video/ Reference_Image/), videos as mp4 files or as folders of PNG frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wan_egoexo.video.read_write import write_video

LAYOUTS = {"ours": ("ego", "exo", "reference"), "authors": ("First_Video", "Third_Video", "Reference_Image")}


def _floor(world: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:world, 0:world]
    base = rng.integers(40, 120, size=3)
    checker = ((xs // 16 + ys // 16) % 2)[..., None] * 40
    ramp = np.stack([xs * 60 // world, ys * 60 // world, (xs + ys) * 30 // world], axis=-1)
    return np.clip(base + checker + ramp, 0, 255).astype(np.uint8)


def render_pair(frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ego, exo, reference): uint8 [frames, size, size, 3] twice and [size, size, 3]."""
    rng = np.random.default_rng(seed)
    world = 2 * size
    floor = _floor(world, rng)
    person_colour = rng.integers(150, 256, size=3).astype(np.uint8)
    props = [(rng.integers(0, world - 12, size=2), rng.integers(0, 256, size=3).astype(np.uint8)) for _ in range(3)]
    start, velocity = rng.uniform(size * 0.6, size * 1.4, size=2), rng.uniform(-1.5, 1.5, size=2)
    ego, exo = [], []
    for i in range(frames):
        scene = floor.copy()
        for (y, x), colour in props:
            scene[y:y + 12, x:x + 12] = colour
        cy, cx = np.clip(start + velocity * i, 12, world - 12).astype(int)
        scene[cy - 8:cy + 8, cx - 5:cx + 5] = person_colour
        exo.append(scene[::2, ::2])
        top, left = np.clip([cy - size // 2, cx - size // 2], 0, world - size)
        ego.append(scene[top:top + size, left:left + size])
    reference = np.full((size, size, 3), 20, dtype=np.uint8)
    reference[size // 4: 3 * size // 4, 3 * size // 8: 5 * size // 8] = person_colour
    return np.stack(ego), np.stack(exo), reference


def _write_clip(path: Path, frames: np.ndarray, as_frames: bool) -> Path:
    if as_frames:
        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(path / f"{i:05d}.png")
        return path
    return write_video(path.with_suffix(".mp4"), frames, 8.0)


def write_synthetic_dataset(root, pairs: int = 3, frames: int = 24, size: int = 80, layout: str = "ours",
                            frame_folders: bool = False, references: bool = True, captions: dict | None = None,
                            seed: int = 0) -> Path:
    """Write ``pairs`` triplets named pair00, pair01, ... under ``root``; returns ``root``."""
    root = Path(root)
    ego_dir, exo_dir, ref_dir = (root / name for name in LAYOUTS[layout])
    for folder in (ego_dir, exo_dir) + ((ref_dir,) if references else ()):
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(pairs):
        stem = f"pair{index:02d}"
        ego, exo, reference = render_pair(frames, size, seed * 1000 + index)
        _write_clip(ego_dir / stem, ego, frame_folders)
        _write_clip(exo_dir / stem, exo, frame_folders)
        if references:
            Image.fromarray(reference).save(ref_dir / f"{stem}.png")
    for stem, text in (captions or {}).items():
        (root / "captions").mkdir(exist_ok=True)
        (root / "captions" / f"{stem}.txt").write_text(text)
    return root
