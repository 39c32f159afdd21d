"""``python -m training.prepare --config training/configs/exo2ego.yaml --data.cache DIR``

Encodes every training clip once with the VAE (``prepare.variants`` windows / posterior samples per
clip, exactly those a run from videos draws in its first epochs) and every prompt once with UMT5,
and stores them as safetensors shards with an index (see cache.py). Training with ``--data.cache DIR``
then loads only the transformer. The cache holds both tasks' fixed prompts, so one cache serves
exo2ego and ego2exo (references are encoded whenever the pair has one).

Runs under torchrun too: each rank encodes its share into its own shards, rank 0 writes the index.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from wan_egoexo.errors import InputError, WanEgoExoError
from wan_egoexo.tasks import EGO2EXO, EXO2EGO, get_task

from .batches import encode_sample
from .cache import INDEX_NAME, ShardWriter, latent_name, prompt_name, write_index
from .config import TrainingConfig, build_parser, config_from_args, dump_config
from .dataset import Augmentation, VideoTripletDataset, keep_as_list
from .distributed import DistributedContext, init_distributed, shutdown
from .session import (checked_discovery, free_memory, model_paths, prompt_table_from_text_encoder, seed_everything,
                      window_settings)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _clear_cache_folder(folder: Path) -> None:
    (folder / INDEX_NAME).unlink(missing_ok=True)  # first: a half-rewritten cache must not look complete
    for shard in folder.glob("shard*.safetensors"):
        shard.unlink()


def prepare_cache(config: TrainingConfig, context: DistributedContext | None = None) -> Path:
    """Write the latent cache for ``config`` into ``config.data.cache``; returns its folder."""
    from wan_egoexo.vae_loader import load_vae  # noqa: PLC0415

    config.validate()
    if not config.data.cache or not config.data.root:
        raise InputError("prepare: expected both data.root (the videos) and data.cache (the folder to write).")
    context = context or init_distributed(config.device, config.distributed.backend)
    task = get_task(config.task)
    folder = Path(config.data.cache).expanduser()
    if context.is_main:
        if (folder / INDEX_NAME).exists() and not config.prepare.overwrite:
            raise InputError(f"data.cache: {folder} already holds a cache; expected a new folder, or "
                             "--prepare.overwrite true to replace it.")
        folder.mkdir(parents=True, exist_ok=True)
        _clear_cache_folder(folder)
    context.barrier()
    seed_everything(config.seed)
    discovery, geometry = checked_discovery(config, context, task.uses_reference, exclude=config.validation.stems)
    triplets = discovery.triplets
    files = model_paths(config, task, ["vae", "text_encoder"])

    writer = ShardWriter(folder, prefix=f"shard-r{context.rank:03d}" if context.distributed else "shard",
                         max_bytes=config.prepare.shard_size_mb << 20)
    held_out = checked_discovery(config, context, task.uses_reference, stems=config.validation.stems)[0].triplets \
        if config.validation.stems else []
    if context.is_main:
        # every caption, held-out pairs' too (validation renders use them), both fixed prompts and ""
        texts = [EXO2EGO.prompt, EGO2EXO.prompt, ""] + [t.caption for t in triplets + held_out if t.caption]
        prompts = prompt_table_from_text_encoder(files["text_encoder"], texts, context.device)
        for text in prompts.texts():
            writer.add(prompt_name(text), prompts.embeddings[text])

    vae = load_vae(files["vae"], device=context.device)
    dataset = VideoTripletDataset(triplets, geometry, window_settings(config), config.seed, load_references=True,
                                  augmentation=Augmentation(config.data.hflip))
    items = [variant * len(dataset) + clip for variant in range(config.prepare.variants)
             for clip in range(len(dataset))][context.rank::context.world_size]
    loader = DataLoader(dataset, sampler=items, batch_size=1, collate_fn=keep_as_list,
                        num_workers=config.data.num_workers)
    dtype = _DTYPES[config.prepare.dtype]
    for samples in tqdm(loader, desc="encoding clips", unit="clip", disable=not context.is_main):
        for sample in samples:
            for view, latent in encode_sample(vae, sample).items():
                if latent is not None:
                    writer.add(latent_name(sample["stem"], sample["variant"], view), latent.to(dtype))
    writer.flush()
    del vae
    free_memory()

    locations = {}
    for part in context.gather_objects(writer.locations):
        locations.update(part)
    if context.is_main:
        d = config.data
        settings = {"num_frames": d.num_frames, "frame_stride": d.frame_stride, "height": d.height, "width": d.width,
                    "resize_long": d.resize_long, "hflip": d.hflip, "variants": config.prepare.variants,
                    "seed": config.seed, "dtype": config.prepare.dtype, "vae": Path(files["vae"]).name}
        samples = [{"stem": t.stem, "caption": t.caption,
                    "has_reference": latent_name(t.stem, 0, "reference") in locations} for t in triplets]
        write_index(folder, {"settings": settings, "samples": samples, "prompts": prompts.texts(),
                             "tensors": locations, "config": dump_config(config)})
    context.barrier()
    return folder


def main(argv=None) -> int:
    parser = build_parser("python -m training.prepare",
                          "Encode a triplet dataset once (VAE latents + UMT5 prompts) into a latent cache.")
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
