"""The latent cache on disk: safetensors shards plus one ``index.json``.

For every clip the cache keeps what a fresh sample needs, not a frozen sample: the VAE posterior's
mean and std (normalised units, see ``wan_egoexo.in_context.latents.encode_posterior``) of several windows, so
that each epoch draws a window and a new posterior sample as the authors' trainer does at every visit.

Tensor names inside the shards: ``<stem>/<start>/<view>/mean`` and ``.../std`` (view ego or exo,
[48, f, h, w]; ``<start>m`` for a mirrored window), ``<stem>/reference/mean|std`` (``reference-m``
mirrored; [48, 1, h, w]) and ``prompt/<sha1>`` (a UMT5 embedding [L, 4096] without its zero padding).
The index lists the samples (stem, caption, frame count, the window starts stored, whether a reference
exists, bytes on disk), the settings the cache was made with, the prompts, and which shard holds each
tensor. ``prepare`` builds the whole folder under a temporary name and renames it when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from wan_egoexo.atomic_files import atomic_path
from wan_egoexo.models.checkpoint_files import read_safetensors_header
from wan_egoexo.errors import InputError, ModelFileError

from .prompts import PromptTable, prompt_key

INDEX_NAME = "index.json"
CACHE_FORMAT = "worldwander-latent-cache/2"
OLD_FORMATS = ("worldwander-latent-cache/1",)
PARTS = ("mean", "std")


def posterior_name(stem: str, view: str, part: str, start: int | None = None, mirrored: bool = False) -> str:
    """Shard name of one posterior tensor; ``start`` is None for the reference image."""
    if view == "reference":
        return f"{stem}/reference{'-m' if mirrored else ''}/{part}"
    return f"{stem}/{int(start)}{'m' if mirrored else ''}/{view}/{part}"


def prompt_name(text: str) -> str:
    return f"prompt/{prompt_key(text)}"


class ShardWriter:
    """Collects tensors and writes them into shards of about ``max_bytes`` each."""

    def __init__(self, folder, prefix: str = "shard", max_bytes: int = 2 << 30):
        self.folder = Path(folder)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.locations: dict[str, str] = {}
        self.sizes: dict[str, int] = {}  # bytes of each tensor's data
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._count = 0

    def _shard_name(self) -> str:
        return f"{self.prefix}-{self._count:05d}.safetensors"

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.locations:
            raise InputError(f"cache: tensor {name!r} written twice; expected unique stems.")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self.flush()
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += size
        self.locations[name] = self._shard_name()
        self.sizes[name] = size

    def flush(self) -> None:
        if not self._pending:
            return
        with atomic_path(self.folder / self._shard_name()) as temp:
            save_file(self._pending, str(temp), metadata={"format": "pt", "content": CACHE_FORMAT})
        self._pending, self._pending_bytes = {}, 0
        self._count += 1


def write_index(folder, index: dict) -> Path:
    path = Path(folder) / INDEX_NAME
    with atomic_path(path) as temp:
        temp.write_text(json.dumps({"format": CACHE_FORMAT, **index}, indent=1))
    return path


def read_index(folder) -> dict:
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise ModelFileError(path, "does not exist: the cache is missing or `prepare` did not finish.",
                             "a latent cache written by `python -m wan_egoexo_training.prepare`")
    try:
        index = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelFileError(path, f"is not valid JSON ({exc}).", "a latent cache index") from None
    if isinstance(index, dict) and index.get("format") in OLD_FORMATS:
        raise ModelFileError(path, f"is a {index['format']} cache (one frozen sample per clip), made by an earlier "
                             "version of prepare.", f"a {CACHE_FORMAT} cache: run prepare again")
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise ModelFileError(path, f"has format {index.get('format') if isinstance(index, dict) else None!r}.",
                             f"a {CACHE_FORMAT} index")
    return index


class LatentCache:
    """Read access to a prepared cache. Shard handles are opened lazily and per process (a DataLoader
    worker gets a copy without them)."""

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()
        self.index = read_index(self.folder)
        self.settings: dict = self.index["settings"]
        self.samples: list[dict] = self.index["samples"]
        self.locations: dict[str, str] = self.index["tensors"]
        self._handles: dict = {}
        self._check_shards()

    def _check_shards(self) -> None:
        by_shard: dict[str, list[str]] = {}
        for name, shard in self.locations.items():
            by_shard.setdefault(shard, []).append(name)
        for shard, names in by_shard.items():
            header = read_safetensors_header(self.folder / shard, "a shard of this latent cache")
            absent = [n for n in names if n not in header]
            if absent:
                raise ModelFileError(self.folder / shard, f"lacks {len(absent)} tensors the index places there "
                                     f"(e.g. {absent[:2]}).", "the shard written with this index")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def tensor(self, name: str) -> torch.Tensor:
        shard = self.locations.get(name)
        if shard is None:
            raise InputError(f"cache {self.folder}: holds no tensor {name!r}.")
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.folder / shard), framework="pt")
        return self._handles[shard].get_tensor(name)

    def posteriors(self, stem: str, start: int, mirrored: bool, with_reference: bool) -> dict:
        """view -> (mean, std) float32 of the window at ``start`` (reference: None unless asked and present)."""
        out = {}
        for view in ("ego", "exo"):
            out[view] = tuple(self.tensor(posterior_name(stem, view, part, start, mirrored)).float() for part in PARTS)
        out["reference"] = None
        if with_reference and posterior_name(stem, "reference", "mean", mirrored=mirrored) in self.locations:
            out["reference"] = tuple(self.tensor(posterior_name(stem, "reference", part, mirrored=mirrored)).float()
                                     for part in PARTS)
        return out

    def prompt_table(self) -> PromptTable:
        return PromptTable({text: self.tensor(prompt_name(text)).float() for text in self.index["prompts"]})
