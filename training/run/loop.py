"""The training loop: micro-batches with gradient accumulation, optimizer and schedule steps,
progress bar and metrics, checkpoints every N steps (and at the end), exact resume, validation renders
and scores, a stop at the first non-finite loss, gradient or weight (see numeric_guard), and the lock
that keeps a second run off the output folder.

A resumed run continues bit-identically on the same hardware: the LoRA, optimizer and schedule
states, every rank's RNG states and the count of samples consumed are restored, and the data order
and per-sample randomness are functions of the seed and that count only (see data_order, dataset).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from wan_egoexo.errors import InputError

from wan_egoexo.atomic_files import atomic_path, disk_errors
from .checkpoints import (CONFIG_FILE, LORA_FILE, clean_interrupted_saves, read_checkpoint_state, resolve_resume,
                          save_checkpoint)
from .checkpoints import checkpoint_path
from ..data.data_order import SampleStream
from ..data.dataset import keep_as_list
from .distributed import (init_distributed, load_optimizer_state, load_trainable_state, optimizer_state, shutdown,
                          trainable_state)
from .expected_warnings import training_warnings
from .metrics_log import MetricsLog
from ..step.numeric_guard import (NonFiniteTrainingError, StepHealth, batch_finite, describe, gradient_norm, likely_cause,
                            weight_stats)
from ..step.objective import flow_matching_loss
from ..step.optim import clip_gradients, effective_lr
from .output_lock import lock_on_main
from .rng_state import capture_rng, restore_rng
from .session import TrainingSession, build_session, free_memory
from .validation import PairResult, run_validation

FINAL_LORA = "lora_final.safetensors"
LOCK_FILE = ".worldwander-run.lock"


@dataclass
class TrainingResult:
    step: int
    losses: list[float] = field(default_factory=list)  # mean loss of each step this run made
    checkpoints: list[Path] = field(default_factory=list)
    lora_path: Path | None = None  # the final LoRA (main process)
    lora_state: dict = field(default_factory=dict)  # final LoRA tensors (complete on the main process)
    resumed_from: Path | None = None


def make_loader(session: TrainingSession) -> DataLoader:
    config, context = session.config, session.context
    sampler = SampleStream(len(session.dataset), config.train.batch_size, config.seed, config.data.shuffle,
                           context.rank, context.world_size, start=session.samples_seen)
    workers = config.data.num_workers
    return DataLoader(session.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=keep_as_list,
                      prefetch_factor=2 if workers else None)


def _trainable(session: TrainingSession) -> list:
    return [(n, p) for n, p in session.model.inner.named_parameters() if p.requires_grad]


def _stop(session: TrainingSession, step: int, health: StepHealth, lr: float) -> NonFiniteTrainingError:
    config = session.config
    _finite, peak, peak_b = weight_stats(_trainable(session))
    base_lr = effective_lr(config.optim, session.context.world_size, config.train.grad_accum)
    cause = likely_cause(health, peak, peak_b, lr, base_lr, config.train.mixed_precision)
    error = NonFiniteTrainingError(describe(step, health, cause, session.last_checkpoint))
    error.step = step
    error.values = {"loss": sum(health.losses) / max(len(health.losses), 1), "lr": lr, "grad_norm": health.grad_norm,
                    "samples_seen": session.samples_seen}
    return error


def training_step(session: TrainingSession, batches) -> tuple[float, float, float]:
    """One optimizer step over grad_accum micro-batches; returns (mean loss of this process, lr used,
    gradient norm before clipping). Raises NonFiniteTrainingError, on every rank, before a non-finite
    gradient is applied or after an update that made a weight non-finite."""
    config, context = session.config, session.context
    accum = config.train.grad_accum
    mixed = "no" if session.model.strategy == "fsdp" else config.train.mixed_precision  # FSDP casts itself
    health = StepHealth()
    for micro in range(accum):
        batch = session.latents(next(batches))
        if not batch_finite(batch):
            health.bad_data_stems += batch.stems
        with session.model.no_sync(last_micro_step=micro == accum - 1):
            loss = flow_matching_loss(session.model.forward, batch, session.prompts, session.table, session.generator,
                                      config.train.prompt_dropout, config.model.positions, mixed)
            (loss / accum).backward()
        health.losses.append(float(loss.detach()))
        session.samples_seen += context.world_size * config.train.batch_size
    health.grad_norm = gradient_norm(session.lora_params)
    lr = float(session.optimizer.param_groups[0]["lr"])
    if context.any(not health.ok):
        raise _stop(session, session.step + 1, health, lr)
    clip_gradients(session.lora_params, config.optim.grad_clip, config.optim.grad_clip_mode)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    session.step += 1
    health.weights_finite = _weights_finite(session)
    if context.any(not health.weights_finite):
        raise _stop(session, session.step, health, lr)
    return sum(health.losses) / len(health.losses), lr, health.grad_norm


def _weights_finite(session: TrainingSession) -> bool:
    """One reduction: the largest |weight| of the LoRA is finite."""
    peak = torch.nn.utils.get_total_norm([p.detach() for p in session.lora_params], norm_type=float("inf"))
    if hasattr(peak, "full_tensor"):
        peak = peak.full_tensor()
    return bool(torch.isfinite(peak))


def weights_checksum(model) -> str:
    digest = hashlib.sha256()
    for name, param in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def save(session: TrainingSession) -> Path | None:
    """A checkpoint of the current step (collective: every rank calls it). Returns its folder on rank 0."""
    config, context = session.config, session.context
    lora_state = trainable_state(session.model)
    optim_state = optimizer_state(session.model, session.optimizer)
    rng = context.gather_objects(capture_rng(session.generator))
    checksums = []
    if config.distributed.check_sync and session.model.strategy != "fsdp":
        checksums = context.gather_objects(weights_checksum(session.model.inner))
        if len(set(checksums)) > 1:
            raise RuntimeError(f"step {session.step}: the ranks hold different LoRA weights ({checksums}); the "
                               "data-parallel run is out of sync.")
    path = None
    if context.is_main:
        state = {"step": session.step, "samples_seen": session.samples_seen, "optimizer": optim_state,
                 "scheduler": session.scheduler.state_dict(), "rng": rng, "world_size": context.world_size,
                 "batch_size": config.train.batch_size, "grad_accum": config.train.grad_accum,
                 "lora_config": {"rank": config.lora.rank, "alpha": config.lora.alpha,
                                 "target_modules": list(config.lora.target_modules)},
                 "rank_checksums": checksums}
        path = save_checkpoint(config.output_dir, session.step, state, lora_state, config.lora.rank, config.lora.alpha,
                               config.lora.save_dtype, session.config_text, config.checkpoint.keep_last)
    context.barrier()
    session.last_checkpoint = checkpoint_path(config.output_dir, session.step)
    return path


def restore(session: TrainingSession, folder: Path) -> None:
    config, context = session.config, session.context
    state = read_checkpoint_state(folder)
    saved = state["lora_config"]
    wanted = {"rank": config.lora.rank, "alpha": config.lora.alpha, "target_modules": list(config.lora.target_modules)}
    differ = [f"lora.{k}: checkpoint {saved[k]!r}, config {wanted[k]!r}" for k in wanted if saved[k] != wanted[k]]
    if differ:
        raise InputError(f"checkpoint.resume: {folder} was trained with another LoRA ({'; '.join(differ)}); expected "
                         "the same LoRA settings, or checkpoint.resume none.")
    load_trainable_state(session.model, state["lora"])
    load_optimizer_state(session.model, session.optimizer, state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    if len(state["rng"]) == context.world_size:
        restore_rng(state["rng"][context.rank], session.generator)
    else:
        warnings.warn(f"{folder}: saved with {len(state['rng'])} processes, resumed with {context.world_size}: the "
                      "random streams restart (training continues, but not bit-identically).", stacklevel=2)
    if (state["world_size"] * state["batch_size"]) != context.world_size * config.train.batch_size:
        warnings.warn(f"{folder}: the global batch changed; data continues after sample {state['samples_seen']}.",
                      stacklevel=2)
    session.step = int(state["step"])
    session.samples_seen = int(state["samples_seen"])
    session.last_checkpoint = folder


def validate(session: TrainingSession) -> tuple[list[PairResult], dict[str, float]]:
    """Render and score the held-out pairs (collective); (results, means) on the main process."""
    from wan_egoexo.models.vae_loader import load_vae  # noqa: PLC0415

    context = session.context
    participates = context.is_main or session.model.strategy == "fsdp"  # FSDP's forward needs every rank
    outcome = ([], {})
    if participates:
        def provide_vae():
            if session.vae is not None:
                return session.vae, lambda: None
            return load_vae(session.files["vae"], device=context.device), free_memory

        outcome = run_validation(session.model.inner, provide_vae, session.prompts, session.validation, session.step,
                                 write=context.is_main)
    context.barrier()
    return outcome


def _validation_line(step: int, results: list[PairResult], means: dict[str, float], note: str | None) -> str:
    scores = ", ".join(f"{k} {v:.4g}" for k, v in means.items())
    line = f"validation at step {step}: {scores} (mean of {len(results)} held-out pair(s); videos in " \
           f"{results[0].video.parent})" if results else f"validation at step {step}: nothing rendered"
    return line + (f"; {note}" if note else "")


def run(session: TrainingSession, callbacks=()) -> TrainingResult:
    """Train until train.max_steps. ``callbacks``: called as callback(session, loss) after every step."""
    config, context = session.config, session.context
    output_dir = Path(config.output_dir)
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        clean_interrupted_saves(output_dir)
        with disk_errors(output_dir / CONFIG_FILE):
            (output_dir / CONFIG_FILE).write_text(session.config_text)
    resume_from = context.broadcast_object(resolve_resume(output_dir, config.checkpoint.resume)
                                           if context.is_main else None)
    result = TrainingResult(step=0, resumed_from=resume_from)
    if resume_from is not None:
        restore(session, resume_from)
    log = MetricsLog(output_dir, context.is_main, config.logging.tensorboard,
                     resumed_from=session.step if resume_from is not None else None)
    bar = tqdm(total=config.train.max_steps, initial=session.step, desc="training", unit="step",
               disable=not (context.is_main and config.logging.progress_bar), dynamic_ncols=True)
    batches = iter(make_loader(session))
    validated = False
    last_saved = session.step if resume_from is not None else None
    try:
        while session.step < config.train.max_steps:
            started = time.perf_counter()
            try:
                loss, lr, grad_norm = training_step(session, batches)
            except NonFiniteTrainingError as exc:
                log.log(exc.step, exc.values)
                raise
            loss = context.mean(loss)
            steps_per_s = 1.0 / max(time.perf_counter() - started, 1e-9)
            result.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", steps_per_s=f"{steps_per_s:.2f}")
            if session.step % config.train.log_every == 0:
                log.log(session.step, {"loss": loss, "lr": lr, "grad_norm": grad_norm, "steps_per_s": steps_per_s,
                                       "samples_seen": session.samples_seen})
            if config.checkpoint.every and session.step % config.checkpoint.every == 0:
                result.checkpoints.append(save(session))
                last_saved = session.step
            if session.validation is not None and session.validation.due(session.step):
                results, means = validate(session)
                if context.is_main:
                    log.log_validation(session.step, [r.row() for r in results], means)
                    note = session.validation.lpips_note if not validated else None  # said once
                    bar.write(_validation_line(session.step, results, means, note))
                validated = True
            for callback in callbacks:
                callback(session, loss)
        if last_saved != session.step:
            result.checkpoints.append(save(session))
        result.step = session.step
        result.lora_state = trainable_state(session.model)
        final = result.checkpoints[-1] if result.checkpoints else resume_from
        if context.is_main and final is not None:
            result.lora_path = output_dir / FINAL_LORA
            with atomic_path(result.lora_path) as temp:
                shutil.copyfile(final / LORA_FILE, temp)
    finally:
        del batches
        bar.close()
        log.close()
    return result


def train(config, callbacks=()) -> TrainingResult:
    """Lock ``config.output_dir``, build the run, train it, release the lock and the process group.
    A second run on the same output folder fails at once, naming the run that holds it."""
    config.validate()
    context = init_distributed(config.device, config.distributed.backend)
    output_dir = Path(config.output_dir)
    existed = output_dir.exists()
    try:
        lock = lock_on_main(context, output_dir / LOCK_FILE, f"output_dir {output_dir}")
        try:
            session = build_session(config, context)
            with training_warnings(context.device, config.train.mixed_precision, announce=context.is_main):
                return run(session, callbacks)
        finally:
            if lock is not None:
                lock.release()
                if not existed and output_dir.is_dir() and not any(output_dir.iterdir()):
                    output_dir.rmdir()  # a run that stopped before writing anything leaves no folder behind
    finally:
        shutdown(context)
