"""The two training datasets: triplets read from videos (pixels; the VAE runs in the training
process) and triplets read from a prepared latent cache (posterior mean and std; a fresh sample is
drawn here).

Dataset items are ``epoch * len + clip``. Every visit draws its window, flip and posterior noise from
(seed, stem, epoch) (see sample_draws), so both datasets give the same samples when the cache holds
every window the clip has.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from wan_egoexo.errors import InputError

from .cache import LatentCache
from .clips import fit_frames, load_reference, read_frames, window_indices, window_starts
from .data_order import split_item
from .dataset_checks import ClipGeometry, WindowSettings
from .pairing import Triplet
from .sample_draws import draw_latents, draw_window, sample_seeds


@dataclass(frozen=True)
class Augmentation:
    hflip: float = 0.0  # probability of mirroring ego, exo and reference together


class VideoTripletDataset(Dataset):
    """Items ``epoch * len + clip`` -> {"stem", "epoch", "start", "mirrored", "ego", "exo" (float
    [3, F, H, W] in [-1, 1]), "reference" ([3, 1, H, W] or None), "caption", "noise_seed"}."""

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

    def frame_count(self, clip: int) -> int:
        return self.geometry[self.triplets[clip].stem].frames

    def pixels(self, clip: int, start: int, mirrored: bool, with_reference: bool) -> dict:
        """ego / exo pixels of the window at ``start`` (and the reference when asked and present)."""
        triplet = self.triplets[clip]
        s = self.settings
        indices = window_indices(start, s.num_frames, s.frame_stride)
        views = {view: fit_frames(read_frames(path, indices), s.resize_long, s.height, s.width)
                 for view, path in (("ego", triplet.ego), ("exo", triplet.exo))}
        views["reference"] = None
        if with_reference and triplet.reference is not None:
            views["reference"] = load_reference(triplet.reference, s.height, s.width)
        if mirrored:
            views = {k: None if v is None else v.flip(-1) for k, v in views.items()}
        return views

    def sample(self, clip: int, epoch: int) -> dict:
        triplet = self.triplets[clip]
        s = self.settings
        window_seed, noise_seed = sample_seeds(self.seed, triplet.stem, epoch)
        starts = window_starts(self.frame_count(clip), s.num_frames, s.frame_stride)
        start, mirrored = draw_window(starts, self.augmentation.hflip, window_seed)
        return {"stem": triplet.stem, "epoch": epoch, "start": start, "mirrored": mirrored,
                **self.pixels(clip, start, mirrored, self.load_references), "caption": triplet.caption,
                "noise_seed": noise_seed}

    def __getitem__(self, item: int) -> dict:
        epoch, clip = split_item(item, len(self))
        return self.sample(clip, epoch)


class CachedLatentDataset(Dataset):
    """Items ``epoch * len + clip`` -> {"stem", "epoch", "start", "mirrored", "ego", "exo", "reference"
    (normalised latents: a fresh posterior sample of a window the cache holds), "caption"}."""

    def __init__(self, cache: LatentCache, need_reference: bool, seed: int, hflip: float = 0.0):
        self.cache = cache
        self.need_reference = need_reference
        self.seed = seed
        self.hflip = hflip
        if hflip > 0 and not cache.settings.get("mirrored"):
            raise InputError(f"data.hflip: {hflip} needs mirrored windows, but the cache {cache.folder} was prepared "
                             "with data.hflip 0; expected data.hflip 0, or prepare again with the hflip you train with.")
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
        stem = entry["stem"]
        window_seed, noise_seed = sample_seeds(self.seed, stem, epoch)
        start, mirrored = draw_window(entry["starts"], self.hflip, window_seed)
        posteriors = self.cache.posteriors(stem, start, mirrored, self.need_reference)
        return {"stem": stem, "epoch": epoch, "start": start, "mirrored": mirrored,
                **draw_latents(posteriors, noise_seed), "caption": entry.get("caption")}


def keep_as_list(samples: list[dict]) -> list[dict]:
    """DataLoader collate: the samples as they are (the training process batches them)."""
    return samples
