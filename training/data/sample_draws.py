"""Per-sample randomness, the same for a run from videos and a run from a latent cache.

Each visit of a clip (its epoch) draws, as the authors' loader and trainer do at every visit, a window
start uniformly from the clip's candidate starts, a mirror flip (when ``data.hflip`` > 0), and a fresh
VAE posterior sample. The draws are a pure function of (seed, stem, epoch) (``sample_seeds``), so any
DataLoader worker count gives the same samples, and a resumed run continues exactly.

Candidate starts are every start that fits when reading videos, and the starts the cache stores when
reading a cache (``clips.spread_starts``: all of them when the clip has no more than ``prepare.windows``).
With the same candidates, both paths draw the same window and the same posterior noise, so a cached run
equals a run from videos bit for bit.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

VIEWS = ("ego", "exo", "reference")  # the order posterior noise is drawn in


def sample_seeds(seed: int, stem: str, epoch: int) -> tuple[int, int]:
    """(window seed, posterior-noise seed) of one visit; stable across runs, processes and machines."""
    words = np.random.SeedSequence([int(seed), zlib.crc32(stem.encode("utf-8")), int(epoch)]).generate_state(2)
    return int(words[0]), int(words[1])


def draw_window(starts: Sequence[int], hflip: float, window_seed: int) -> tuple[int, bool]:
    """(start, mirrored): a start drawn uniformly from ``starts``, then the flip with probability ``hflip``."""
    rng = np.random.default_rng(window_seed)
    start = int(starts[int(rng.integers(0, len(starts)))])
    return start, bool(rng.random() < hflip)


def draw_latents(posteriors: dict, noise_seed: int) -> dict[str, torch.Tensor | None]:
    """One sample of each view's posterior: ``posteriors[view]`` is (mean, std) in normalised units (or
    None); returns view -> float32 mean + std * noise. The noise comes from a CPU generator seeded by
    ``noise_seed``, drawn view by view in VIEWS order, whatever device the posterior is on."""
    generator = torch.Generator().manual_seed(int(noise_seed))
    out = {}
    for view in VIEWS:
        posterior = posteriors.get(view)
        if posterior is None:
            out[view] = None
            continue
        mean, std = posterior
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
        out[view] = mean.float() + std.float() * noise
    return out
