"""Setting up a training run from its config: processes, data (videos or a latent cache), prompt
table, transformer with its LoRA (DDP / FSDP wrapped), optimizer, schedule, and the state restored
from a checkpoint. The loop and the benchmark both start from ``build_session``.

Memory order: the text encoder is loaded, used for every prompt and freed before the transformer
loads; when training from a cache neither the text encoder nor the VAE is loaded at all.
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.models.model_files import find_model_files
from wan_egoexo.in_context.tasks import Task, get_task

from ..step.batches import LatentSource
from ..data.cache import LatentCache
from ..config import TrainingConfig, dump_config
from ..data.dataset import Augmentation, CachedLatentDataset, VideoTripletDataset
from ..data.dataset_checks import WindowSettings, check_dataset
from .distributed import DistributedContext, WrappedModel, init_distributed, wrap_model
from ..step.flow_matching import FlowMatchingTable, build_table
from ..step.lora_training import add_training_lora
from ..step.optim import build_optimizer, build_scheduler
from ..data.pairing import Discovery, find_triplets
from ..data.prompts import DROPPED_PROMPT, PromptTable, encode_prompt_table, sample_prompt
from .validation import ValidationPlan

# Cache settings that must equal the run's for the cached latents to be what the run asks for.
CACHE_GEOMETRY = ("num_frames", "frame_stride", "height", "width", "resize_long")


def window_settings(config: TrainingConfig) -> WindowSettings:
    d = config.data
    return WindowSettings(d.num_frames, d.frame_stride, d.height, d.width, d.resize_long)


def model_paths(config: TrainingConfig, task: Task, roles) -> dict[str, Path]:
    """Paths of the wanted model files: explicit model.<role>, else found in models_dir / diffusers_dir."""
    explicit = {role: getattr(config.model, role) for role in roles if getattr(config.model, role)}
    if len(explicit) == len(roles):
        return {role: Path(path).expanduser() for role, path in explicit.items()}
    found = find_model_files(task, config.model.models_dir, config.model.diffusers_dir, use_lora=False)
    return {role: Path(explicit.get(role) or getattr(found, role)).expanduser() for role in roles}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def training_generator(seed: int, rank: int) -> torch.Generator:
    """The CPU generator for dropout, timesteps and noise: its own stream per rank."""
    words = np.random.SeedSequence([seed, rank, 0x7A1]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


def checked_discovery(config: TrainingConfig, context: DistributedContext, need_reference: bool,
                      stems=None, exclude=()) -> tuple[Discovery, dict]:
    """Pair and check the dataset on rank 0 (every fault raised on every rank): the triplets (only
    ``stems`` when given, without ``exclude``) and their geometry."""
    def work():
        discovery = find_triplets(config.data.root, need_reference, config.data.pairing, config.data.captions)
        by_stem = {t.stem: t for t in discovery.triplets}
        if stems is not None:
            unknown = [s for s in stems if s not in by_stem]
            if unknown:
                raise InputError(f"validation.stems: {unknown} are not pairs of {discovery.root}; expected stems of "
                                 f"ego/exo pairs such as {sorted(by_stem)[:3]}.")
            discovery.triplets = [by_stem[s] for s in stems]
            discovery.faults = []
        discovery.triplets = [t for t in discovery.triplets if t.stem not in set(exclude)]
        geometry = check_dataset(discovery, window_settings(config), need_reference, config.data.check_workers)
        return discovery, geometry

    return context.run_on_main(work)


def check_cache_settings(cache: LatentCache, config: TrainingConfig) -> None:
    wanted = window_settings(config).__dict__
    differ = [f"data.{k}: cache {cache.settings.get(k)!r}, config {wanted[k]!r}" for k in CACHE_GEOMETRY
              if cache.settings.get(k) != wanted[k]]
    if differ:
        raise InputError(f"data.cache: {cache.folder} was prepared with other settings ({'; '.join(differ)}); "
                         "expected the same settings, or run prepare again.")


@dataclass
class TrainingSession:
    config: TrainingConfig
    context: DistributedContext
    task: Task
    model: WrappedModel
    lora_params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    table: FlowMatchingTable
    prompts: PromptTable
    dataset: object
    latents: LatentSource
    generator: torch.Generator
    files: dict
    validation: ValidationPlan | None
    vae: object = None
    step: int = 0
    samples_seen: int = 0
    last_checkpoint: Path | None = None  # the latest complete checkpoint of this run (saved or resumed from)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def config_text(self) -> str:
        return dump_config(self.config)


def prompt_table_from_text_encoder(path: Path, texts, device) -> PromptTable:
    from wan_egoexo.models.text_encoder_loader import load_text_encoder  # noqa: PLC0415

    text_encoder = load_text_encoder(path, device=device)
    try:
        return encode_prompt_table(text_encoder, texts)
    finally:
        del text_encoder
        free_memory()


def build_session(config: TrainingConfig, context: DistributedContext | None = None) -> TrainingSession:
    from wan_egoexo.models.transformer_loader import load_transformer  # noqa: PLC0415
    from wan_egoexo.models.vae_loader import load_vae  # noqa: PLC0415

    config.validate()
    context = context or init_distributed(config.device, config.distributed.backend)
    task = get_task(config.task)
    seed_everything(config.seed)
    held_out = list(config.validation.stems)
    validation_triplets, validation_geometry = [], {}
    if config.validation.every:
        found, validation_geometry = checked_discovery(config, context, task.uses_reference, stems=held_out)
        validation_triplets = found.triplets

    vae = None
    if config.data.cache:
        cache = LatentCache(config.data.cache)
        check_cache_settings(cache, config)
        overlap = sorted({s["stem"] for s in cache.samples} & set(held_out))
        if overlap:
            raise InputError(f"validation.stems: {overlap} are in the training cache {cache.folder}; expected held-out "
                             "pairs (prepare leaves out the stems listed in validation.stems).")
        dataset = CachedLatentDataset(cache, task.uses_reference, config.seed, config.data.hflip)
        prompts = cache.prompt_table()
        files = model_paths(config, task, ["transformer"] + (["vae"] if validation_triplets else []))
    else:
        if not config.data.root:
            raise InputError("data.root: not set; expected the dataset folder (or data.cache for a prepared cache).")
        discovery, geometry = checked_discovery(config, context, task.uses_reference, exclude=held_out)
        dataset = VideoTripletDataset(discovery.triplets, geometry, window_settings(config), config.seed,
                                      load_references=task.uses_reference, augmentation=Augmentation(config.data.hflip))
        files = model_paths(config, task, ["transformer", "vae", "text_encoder"])
        texts = [sample_prompt(task, t.caption) for t in discovery.triplets + validation_triplets] + [DROPPED_PROMPT]
        prompts = prompt_table_from_text_encoder(files["text_encoder"], texts, context.device)
        vae = load_vae(files["vae"], device=context.device)
    if validation_triplets:
        missing = [sample_prompt(task, t.caption) for t in validation_triplets
                   if sample_prompt(task, t.caption) not in prompts]
        if missing:
            raise InputError(f"validation: prompts {missing[:3]} are not in the cache; run prepare again with "
                             "validation.stems set.")

    dtype = config.model.dtype
    if config.distributed.strategy == "fsdp" and context.distributed and dtype == "auto":
        dtype = "fp32"
    transformer = load_transformer(files["transformer"], device=context.device, dtype=dtype,
                                   attention=config.model.attention)
    lora_params = add_training_lora(transformer, config.lora.rank, config.lora.alpha, config.lora.target_modules,
                                    config.seed)
    if config.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    model = wrap_model(transformer, context, config.distributed.strategy, config.train.mixed_precision)
    lora_params = [p for p in model.inner.parameters() if p.requires_grad]  # FSDP replaces them with shards
    optimizer = build_optimizer(lora_params, config.optim, context.world_size, config.train.grad_accum)
    scheduler = build_scheduler(optimizer, config.optim.warmup_steps)
    validation = None
    if validation_triplets:
        validation = ValidationPlan(validation_triplets, validation_geometry, window_settings(config),
                                    config.validation, task, config.model.positions, config.seed,
                                    Path(config.output_dir) / "validation")
    return TrainingSession(
        config=config, context=context, task=task, model=model, lora_params=lora_params, optimizer=optimizer,
        scheduler=scheduler, table=build_table(config.train.num_train_timesteps, config.train.flow_shift),
        prompts=prompts, dataset=dataset, latents=LatentSource(task, context.device, vae),
        generator=training_generator(config.seed, context.rank), files=files, validation=validation, vae=vae)
