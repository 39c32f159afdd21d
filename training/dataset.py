"""The two training datasets: triplets read from videos (pixels; the VAE runs in the training
process) and triplets read from a prepared latent cache.

Randomness is a pure function of (seed, stem, variant): the window start and the mirror flip come
from one seed, the VAE posterior sample from another (see ``sample_seeds``). Variant is the epoch
for videos and epoch % variants for a cache, so ``prepare`` stores exactly the windows and posterior
samples a run from videos would draw in its first ``variants`` epochs, and any DataLoader worker
count gives the same samples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from wan_egoexo.errors import InputError

from .cache import LatentCache
from .clips import fit_frames, load_reference, read_frames, window_indices
from .data_order import split_item
from .dataset_checks import ClipGeometry, WindowSettings
from .pairing import Triplet


def sample_seeds(seed: int, stem: str, variant: int) -> tuple[int, int]:
    """(window seed, posterior-noise seed) of one sample; stable across runs, processes and machines."""
    words = np.random.SeedSequence([int(seed), zlib.crc32(stem.encode("utf-8")), int(variant)]).generate_state(2)
    return int(words[0]), int(words[1])


@dataclass(frozen=True)
class Augmentation:
    hflip: float = 0.0  # probability of mirroring ego, exo and reference together


class VideoTripletDataset(Dataset):
    """Items ``epoch * len + clip`` -> {"stem", "variant", "ego", "exo" (float [3, F, H, W] in [-1, 1]),
    "reference" ([3, 1, H, W] or None), "caption", "noise_seed"}."""

    def __init__(self, triplets: list[Triplet], geometry: dict[str, ClipGeometry], settings: WindowSettings,
                 seed: int, load_references: bool, augmentation: Augmentation = Augmentation()):
        self.triplets = list(triplets)
        self.geometry = geometry
        self.settings = settings
        self.seed = seed
        self.load_references = load_references
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.triplets)

    def sample(self, clip: int, variant: int) -> dict:
        triplet = self.triplets[clip]
        s = self.settings
        window_seed, noise_seed = sample_seeds(self.seed, triplet.stem, variant)
        rng = np.random.default_rng(window_seed)
        indices = window_indices(self.geometry[triplet.stem].frames, s.num_frames, s.frame_stride, rng)
        flip = bool(rng.random() < self.augmentation.hflip)
        views = {view: fit_frames(read_frames(path, indices), s.resize_long, s.height, s.width)
                 for view, path in (("ego", triplet.ego), ("exo", triplet.exo))}
        reference = None
        if self.load_references and triplet.reference is not None:
            reference = load_reference(triplet.reference, s.height, s.width)
        if flip:
            views = {k: v.flip(-1) for k, v in views.items()}
            reference = None if reference is None else reference.flip(-1)
        return {"stem": triplet.stem, "variant": variant, "ego": views["ego"], "exo": views["exo"],
                "reference": reference, "caption": triplet.caption, "noise_seed": noise_seed}

    def __getitem__(self, item: int) -> dict:
        epoch, clip = split_item(item, len(self))
        return self.sample(clip, epoch)


class CachedLatentDataset(Dataset):
    """Items ``epoch * len + clip`` -> {"stem", "variant", "ego", "exo", "reference" (latents), "caption"}."""

    def __init__(self, cache: LatentCache, need_reference: bool):
        self.cache = cache
        self.variants = int(cache.settings["variants"])
        if need_reference:
            missing = [s["stem"] for s in cache.samples if not s.get("has_reference")]
            if missing:
                raise InputError(f"cache {cache.folder}: {len(missing)} pairs have no reference latents "
                                 f"({missing[:5]}); the ego2exo task needs one per pair. Add the reference images "
                                 "and run prepare again.")

    def __len__(self) -> int:
        return len(self.cache.samples)

    def __getitem__(self, item: int) -> dict:
        epoch, clip = split_item(item, len(self))
        entry = self.cache.samples[clip]
        variant = epoch % self.variants
        latents = self.cache.latents(entry["stem"], variant)
        return {"stem": entry["stem"], "variant": variant, **latents, "caption": entry.get("caption")}


def keep_as_list(samples: list[dict]) -> list[dict]:
    """DataLoader collate: the samples as they are (the training process batches them)."""
    return samples
