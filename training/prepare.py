"""``python -m wan_egoexo_training.prepare --config exo2ego --data.root DATA --data.cache DIR``

Encodes every training clip once with the VAE and every prompt once with UMT5, and stores them as
safetensors shards with an index (see data/cache.py). Per clip the cache keeps the posterior mean and std
of up to ``prepare.windows`` windows spread over the clip (every window when the clip has no more),
both orientations when ``data.hflip`` > 0, and of the reference image; training then draws a window
and a fresh posterior sample at every visit. Training with ``--data.cache DIR`` loads only the
transformer. The cache holds both tasks' fixed prompts, so one cache serves exo2ego and ego2exo
(references are encoded whenever the pair has one).

Nothing is half-written: the cache is built in a temporary folder beside DIR and renamed to DIR when
complete (replacing an older cache only with ``--prepare.overwrite true``); a lock beside DIR keeps a
second ``prepare`` off it. Runs under torchrun too: each rank encodes its share into its own shards,
rank 0 writes the index.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wan_egoexo.atomic_files import atomic_folder
from wan_egoexo.errors import InputError, WanEgoExoError
from wan_egoexo.in_context.tasks import EGO2EXO, EXO2EGO, get_task

from .step.batches import encode_posteriors
from .data.cache import INDEX_NAME, PARTS, ShardWriter, posterior_name, prompt_name, write_index
from .data.clips import spread_starts
from .config import TrainingConfig, build_parser, config_from_args, dump_config
from .data.dataset import VideoTripletDataset, keep_as_list
from .run.distributed import DistributedContext, init_distributed, shutdown
from .run.output_lock import lock_on_main
from .run.session import checked_discovery, free_memory, model_paths, prompt_table_from_text_encoder, window_settings

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class WindowItems(Dataset):
    """Items (clip, start, mirrored, with_reference) -> that window's pixels, for the DataLoader."""

    def __init__(self, videos: VideoTripletDataset, items: list[tuple[int, int, bool, bool]]):
        self.videos, self.items = videos, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        clip, start, mirrored, with_reference = self.items[index]
        return {"stem": self.videos.triplets[clip].stem, "start": start, "mirrored": mirrored,
                **self.videos.pixels(clip, start, mirrored, with_reference)}


def check_destination(folder: Path, overwrite: bool) -> None:
    """A new or empty folder, or an existing cache to replace with ``overwrite``; never a folder of other files."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"data.cache: {folder} is a file; expected a folder for the latent cache.")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not (folder / INDEX_NAME).is_file():
        example = next(iter(sorted(p.name for p in folder.iterdir())))
        raise InputError(f"data.cache: {folder} holds other files ({example}, ...); expected a new or empty folder, "
                         "or an existing latent cache.")
    if not overwrite:
        raise InputError(f"data.cache: {folder} already holds a cache; expected a new folder, or "
                         "--prepare.overwrite true to replace it.")


def remove_interrupted(folder: Path) -> None:
    """Temporary folders left beside ``folder`` by a prepare that was killed (we hold its lock)."""
    for path in folder.parent.iterdir() if folder.parent.is_dir() else ():
        if path.name.startswith(f".{folder.name}.") and path.is_dir() and (
                path.name.endswith(".partial") or ".old-" in path.name):
            shutil.rmtree(path, ignore_errors=True)


def window_plan(videos: VideoTripletDataset, windows: int, mirrored: bool) -> tuple[list, dict[str, list[int]]]:
    """(items to encode, stored starts by stem): ``windows`` spread starts per clip, both orientations when
    ``mirrored``; the reference is encoded with each orientation's first window."""
    s = videos.settings
    items, starts_by_stem = [], {}
    for clip, triplet in enumerate(videos.triplets):
        starts = spread_starts(videos.frame_count(clip), s.num_frames, s.frame_stride, windows)
        starts_by_stem[triplet.stem] = starts
        for flip in ((False, True) if mirrored else (False,)):
            items += [(clip, start, flip, start == starts[0]) for start in starts]
    return items, starts_by_stem


def _encode(config: TrainingConfig, context: DistributedContext, folder: Path, videos: VideoTripletDataset,
            items: list, files: dict, texts: list[str]) -> tuple[dict, dict, list[str]]:
    """Encode this rank's share into shards under ``folder``; returns (tensor locations, bytes per stem,
    prompt texts) gathered from every rank."""
    from wan_egoexo.models.vae_loader import load_vae  # noqa: PLC0415

    writer = ShardWriter(folder, prefix=f"shard-r{context.rank:03d}" if context.distributed else "shard",
                         max_bytes=config.prepare.shard_size_mb << 20)
    prompts = []
    if context.is_main:
        table = prompt_table_from_text_encoder(files["text_encoder"], texts, context.device)
        prompts = table.texts()
        for text in prompts:
            writer.add(prompt_name(text), table.embeddings[text])
    vae = load_vae(files["vae"], device=context.device)
    share = WindowItems(videos, items[context.rank::context.world_size])
    loader = DataLoader(share, batch_size=1, collate_fn=keep_as_list, num_workers=config.data.num_workers)
    dtype = _DTYPES[config.prepare.dtype]
    sizes: dict[str, int] = {}
    for samples in tqdm(loader, desc="encoding windows", unit="window", disable=not context.is_main):
        for sample in samples:
            for view, posterior in encode_posteriors(vae, sample).items():
                if posterior is None:
                    continue
                for part, tensor in zip(PARTS, posterior):
                    start = None if view == "reference" else sample["start"]
                    tensor = tensor.to(dtype)
                    writer.add(posterior_name(sample["stem"], view, part, start, sample["mirrored"]), tensor)
                    sizes[sample["stem"]] = sizes.get(sample["stem"], 0) + tensor.numel() * tensor.element_size()
    writer.flush()
    del vae
    free_memory()
    locations, total_sizes = {}, {}
    for part_locations, part_sizes in context.gather_objects((writer.locations, sizes)):
        locations.update(part_locations)
        for stem, size in part_sizes.items():
            total_sizes[stem] = total_sizes.get(stem, 0) + size
    return locations, total_sizes, context.broadcast_object(prompts)


def _disk_report(samples: list[dict], dtype: str, mirrored: bool) -> str:
    lines = [f"disk use per clip (posterior mean + std, {dtype}):"]
    for s in samples:
        views = "ego+exo" + ("+reference" if s["has_reference"] else "")
        lines.append(f"  {s['stem']}: {s['frames']} frames, {len(s['starts'])} window(s)"
                     f"{' x 2 orientations' if mirrored else ''} of {views}: {s['bytes'] / 1e6:.2f} MB")
    total = sum(s["bytes"] for s in samples)
    lines.append(f"  total {total / 1e6:.2f} MB for {len(samples)} clips")
    return "\n".join(lines)


def prepare_cache(config: TrainingConfig, context: DistributedContext | None = None) -> Path:
    """Write the latent cache for ``config`` into ``config.data.cache``; returns its folder."""
    config.validate()
    if not config.data.cache or not config.data.root:
        raise InputError("prepare: expected both data.root (the videos) and data.cache (the folder to write).")
    context = context or init_distributed(config.device, config.distributed.backend)
    task = get_task(config.task)
    folder = Path(config.data.cache).expanduser().absolute()
    lock = lock_on_main(context, folder.parent / f".{folder.name}.lock", f"data.cache {folder}")
    try:
        context.run_on_main(lambda: check_destination(folder, config.prepare.overwrite))
        discovery, geometry = checked_discovery(config, context, task.uses_reference, exclude=config.validation.stems)
        triplets = discovery.triplets
        held_out = checked_discovery(config, context, task.uses_reference, stems=config.validation.stems)[0].triplets \
            if config.validation.stems else []
        files = model_paths(config, task, ["vae", "text_encoder"])
        # every caption, held-out pairs' too (validation renders use them), both fixed prompts and ""
        texts = [EXO2EGO.prompt, EGO2EXO.prompt, ""] + [t.caption for t in triplets + held_out if t.caption]
        videos = VideoTripletDataset(triplets, geometry, window_settings(config), config.seed, load_references=True)
        mirrored = config.data.hflip > 0
        items, starts = window_plan(videos, config.prepare.windows, mirrored)

        def build(temp: Path) -> None:
            locations, sizes, prompts = _encode(config, context, temp, videos, items, files, texts)
            if context.is_main:
                d = config.data
                settings = {"num_frames": d.num_frames, "frame_stride": d.frame_stride, "height": d.height,
                            "width": d.width, "resize_long": d.resize_long, "windows": config.prepare.windows,
                            "mirrored": mirrored, "dtype": config.prepare.dtype, "vae": Path(files["vae"]).name}
                samples = [{"stem": t.stem, "caption": t.caption, "frames": geometry[t.stem].frames,
                            "starts": starts[t.stem], "bytes": sizes.get(t.stem, 0),
                            "has_reference": posterior_name(t.stem, "reference", "mean") in locations}
                           for t in triplets]
                write_index(temp, {"settings": settings, "samples": samples, "prompts": prompts,
                                   "tensors": locations, "config": dump_config(config)})
                print(_disk_report(samples, config.prepare.dtype, mirrored), file=sys.stderr)
            context.barrier()

        if context.is_main:
            remove_interrupted(folder)
            with atomic_folder(folder) as temp:
                context.broadcast_object(str(temp))
                build(temp)
        else:
            build(Path(context.broadcast_object(None)))
        context.barrier()
    finally:
        if lock is not None:
            lock.release()
    return folder


def main(argv=None) -> int:
    parser = build_parser("python -m wan_egoexo_training.prepare",
                          "Encode a triplet dataset once (VAE posteriors + UMT5 prompts) into a latent cache.")
    args = parser.parse_args(argv)
    context = None
    try:
        config = config_from_args(args)
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        context = init_distributed(config.device, config.distributed.backend)
        folder = prepare_cache(config, context)
    except WanEgoExoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if context is not None:
            shutdown(context)
    if context.is_main:
        print(f"latent cache written to {folder}; train with --data.cache {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
