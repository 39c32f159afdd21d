"""The order samples are drawn in: one global stream of epochs, each a seeded permutation of the
clips, split across ranks and resumable at any sample.

Dataset items are ``epoch * num_clips + clip`` so a dataset knows the epoch (it picks the clip's
window / cache variant from it). Global micro-batch g holds stream positions
[g * world * batch, (g + 1) * world * batch); rank r takes its r-th slice of ``batch``. Nothing here
depends on the number of DataLoader workers, and resuming only needs the count of samples already
consumed. torch's DistributedSampler is not used: it restarts every epoch from its beginning, so it
cannot resume in the middle of one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1)[0])


class SampleStream(Sampler):
    """Infinite batch sampler: lists of ``batch_size`` dataset items for one rank, from ``start``
    (samples already consumed by all ranks together)."""

    def __init__(self, num_clips: int, batch_size: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        if num_clips < 1:
            raise ValueError("SampleStream needs at least one clip")
        self.num_clips, self.batch_size, self.seed, self.shuffle = num_clips, batch_size, seed, shuffle
        self.rank, self.world_size, self.start = rank, world_size, start
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if self.shuffle:
                generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
                self._orders = {epoch: torch.randperm(self.num_clips, generator=generator).numpy()}
            else:
                self._orders = {epoch: np.arange(self.num_clips)}
        return self._orders[epoch]

    def item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_clips)
        return epoch * self.num_clips + int(self.order(epoch)[offset])

    def __iter__(self):
        position = self.start + self.rank * self.batch_size
        stride = self.world_size * self.batch_size
        while True:
            yield [self.item(position + i) for i in range(self.batch_size)]
            position += stride


def split_item(item: int, num_clips: int) -> tuple[int, int]:
    """(epoch, clip) of a dataset item."""
    return divmod(int(item), num_clips)
