"""End-to-end translation of one clip: fit to the grid, VAE-encode the parts, encode the prompt,
sample the target, decode, undo the fit. ``translate_frames`` works on loaded models (the nodes
and tests use it); ``translate_file`` loads the models in a memory-friendly order and writes the mp4.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..option_ranges import check_lora_strength
from ..devices import resolve_device, resolve_dtype
from ..in_context.latents import decode_latents, encode_video
from ..memory.auto import MemoryPlan
from ..memory.prompt_cache import encode_prompts_cached
from ..models.model_files import ModelFiles
from ..sampling.sampler import SamplingSettings, sample_target
from ..in_context.tasks import Task, get_task
from ..models.text_encoder_loader import load_text_encoder
from ..models.text_encoding import encode_prompts
from ..models.transformer_loader import load_transformer
from ..models.vae_loader import load_vae
from ..video.fit import FitInfo, FitOptions, fit_video, letterbox_image, output_fps, unfit_video
from ..video.restore import RestoredFrames
from ..in_context.windows import WindowOptions
from ..video.clip_reader import read_fitted_clip
from ..video.read_write import write_video


@dataclass
class TranslationResult:
    # uint8 [F, H, W, 3] at the input's size; translate_clip / translate_file, which write a file, give a
    # restore.RestoredFrames (a sized iterable of those frames, each restored when read: see video/restore)
    frames: np.ndarray | RestoredFrames
    fps: float
    fit: FitInfo
    latents: torch.Tensor  # normalised target latents [1, 48, f, h, w]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the reader assumed or could not read

    @property
    def seconds(self) -> float:
        """How long the translated clip plays."""
        return len(self.frames) / self.fps


def task_prompts(task: Task, prompt: str | None = None, negative_prompt: str = "", cfg: float = 5.0) -> list[str]:
    """[prompt] or [prompt, negative prompt] (with guidance); the task's fixed prompt by default."""
    prompts = [task.prompt if prompt is None else prompt]
    if cfg != 1.0:
        prompts.append(negative_prompt)
    return prompts


def _split_embeds(embeds: torch.Tensor):
    return (embeds[:1], embeds[1:]) if embeds.shape[0] == 2 else (embeds, None)


def encode_task_prompts(text_encoder, task: Task, prompt: str | None = None, negative_prompt: str = "",
                        cfg: float = 5.0, device=None):
    """(conditional, unconditional-or-None) embeddings [1, 512, D]; the task's fixed prompt by default."""
    return _split_embeds(encode_prompts(text_encoder, task_prompts(task, prompt, negative_prompt, cfg), device=device))


def prepare_reference(task: Task, reference_image, width: int, height: int):
    """The reference image as a 1-frame video [1, 3, 1, H, W] letterboxed to the clip size, or None."""
    if not task.uses_reference:
        if reference_image is not None:
            warnings.warn(f"reference: the {task.name} task uses no reference image; it is ignored.", stacklevel=3)
        return None
    if reference_image is None:
        raise InputError(f"reference: the {task.name} task needs a reference image of the subject "
                         "(a full-body view, e.g. from behind); none was given.")
    return letterbox_image(reference_image, width, height)[None]


def translate_frames(transformer, vae, text_embeds, negative_embeds, frames, fps: float, task,
                     reference_image=None, fit: FitOptions | None = None,
                     settings: SamplingSettings | None = None, positions: str = "collaborative",
                     callback=None, windows: WindowOptions | None = None,
                     frame_rate: str = "model", cfg_batch: int = 2) -> TranslationResult:
    """Translate uint8 frames [F, H, W, 3] with already loaded models and encoded prompts.

    windows: sliding windows for clips longer than one window (None = one pass over the whole clip).
    frame_rate: "model" returns the fitted frames (8 fps by default); "source" resamples them back
    to the input's frame rate and frame count over the covered span.
    cfg_batch: 2 = guidance in one batched forward, 1 = two forwards in a row (half the memory)."""
    start = time.perf_counter()
    video, info = fit_video(frames, fps, fit or FitOptions())
    fit_seconds = time.perf_counter() - start
    result = translate_fitted(transformer, vae, text_embeds, negative_embeds, video, info, task, reference_image,
                              settings, positions, callback, windows, frame_rate, cfg_batch)
    result.timings = {"fit": fit_seconds, **result.timings}
    return result


def translate_fitted(transformer, vae, text_embeds, negative_embeds, video, info: FitInfo, task,
                     reference_image=None, settings: SamplingSettings | None = None,
                     positions: str = "collaborative", callback=None, windows: WindowOptions | None = None,
                     frame_rate: str = "model", cfg_batch: int = 2, stream_output: bool = False) -> TranslationResult:
    """translate_frames for a clip already fitted to the grid (video [3, F, H, W] in [-1, 1] and its FitInfo).
    ``stream_output``: the result's frames are a RestoredFrames (restored when written, a few at a time)
    rather than one array at the source's size."""
    task = get_task(task)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    reference = prepare_reference(task, reference_image, info.width, info.height)
    source = encode_video(vae, video[None])
    ref_latents = None if reference is None else encode_video(vae, reference)
    timings["encode"] = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        latents = sample_target(transformer, source, text_embeds, negative_embeds, reference=ref_latents,
                                positions=positions, settings=settings, callback=callback, windows=windows,
                                cfg_batch=cfg_batch)
    timings["sample"] = time.perf_counter() - start

    start = time.perf_counter()
    decoded = decode_latents(vae, latents)
    out = RestoredFrames(decoded[0], info, frame_rate) if stream_output else unfit_video(decoded[0], info, frame_rate)
    timings["decode"] = time.perf_counter() - start
    return TranslationResult(out, output_fps(info, frame_rate), info, latents.cpu(), timings)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class LoadedModels:
    """Everything a translation needs, loaded once (a batch reuses it for every clip)."""

    transformer: object
    vae: object
    text_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    task: Task
    load_seconds: dict[str, float] = field(default_factory=dict)
    cfg_batch: int = 2  # how guidance runs (the memory plan's choice)


def _encode_text(files: ModelFiles, prompts: list[str], plan: MemoryPlan | None, prompt_cache_dir, device):
    """Prompt embeddings on the CPU: from the on-disk cache when the plan allows (the text encoder
    then loads only for prompts never seen), else by loading the encoder and releasing it."""
    if plan is not None and plan.prompt_cache:
        embeds, _stats = encode_prompts_cached(files.text_encoder, prompts, prompt_cache_dir,
                                               device=plan.text_encoder_device)
        return embeds
    text_encoder = load_text_encoder(files.text_encoder, device=plan.text_encoder_device if plan else device)
    embeds = encode_prompts(text_encoder, prompts, device="cpu")
    del text_encoder
    _free_memory()
    return embeds


def apply_memory_plan(transformer, vae, plan: MemoryPlan, dtype=None) -> None:
    """Memory options on loaded models: compact modulation, fp8 storage (after merging LoRAs, which
    go on before), block offloading with the plan's resident blocks, then compilation."""
    # each option's module is imported only when the plan uses it
    if vae is not None and plan.vae_tiling:
        from ..memory.vae_chunking import enable_vae_tiling  # noqa: PLC0415

        enable_vae_tiling(vae)
    if plan.compact_modulation:
        from ..memory.modulation import enable_compact_modulation  # noqa: PLC0415

        enable_compact_modulation(transformer)
    if plan.fp8_weights:
        from ..memory.fp8_weights import enable_fp8_storage  # noqa: PLC0415

        enable_fp8_storage(transformer, resolve_dtype(dtype, resolve_device(plan.device)),
                           device=None if plan.block_offload else plan.device)
    if plan.block_offload:
        from ..memory.offload import enable_block_offload  # noqa: PLC0415

        enable_block_offload(transformer, plan.device, plan.resident_blocks)
    if plan.compile_blocks:
        from ..memory.compile import compile_blocks  # noqa: PLC0415

        compile_blocks(transformer)


def load_models(files: ModelFiles, task, prompt=None, negative_prompt: str = "", cfg: float = 5.0,
                lora_strength: float = 1.0, device=None, dtype=None, attention=None, log=print,
                plan: MemoryPlan | None = None, prompt_cache_dir=None) -> LoadedModels:
    """Encode the prompt (the text encoder is released before anything else loads), then load the VAE,
    the transformer and the LoRA (merged into the weights when the plan says so, else an unfused
    adapter), and apply the memory ``plan`` (None: everything resident, no cache, unfused LoRA)."""
    task = get_task(task)
    if files.lora is not None:
        check_lora_strength(lora_strength)  # before anything loads
    seconds = {}
    start = time.perf_counter()
    cond, uncond = _split_embeds(_encode_text(files, task_prompts(task, prompt, negative_prompt, cfg), plan,
                                              prompt_cache_dir, device))
    seconds["text"] = time.perf_counter() - start
    start = time.perf_counter()
    vae = load_vae(files.vae, device=plan.device if plan else device)
    staged = plan is not None and (plan.block_offload or plan.fp8_weights)  # load on the CPU, move per the plan
    transformer = load_transformer(files.transformer, device="cpu" if staged else (plan.device if plan else device),
                                   dtype=resolve_dtype(dtype, resolve_device(plan.device if plan else device)),
                                   attention=attention or (plan.attention if plan else None))
    if files.lora is not None:
        if plan is not None and plan.merge_loras:
            from ..lora import merge_loras  # noqa: PLC0415

            merge_loras(transformer, [(files.lora, lora_strength)], device=plan.device)
        else:
            from ..lora import apply_lora  # noqa: PLC0415  (peft adapters)

            apply_lora(transformer, files.lora, strength=lora_strength)
    if plan is not None:
        apply_memory_plan(transformer, vae, plan, dtype)
    seconds["load"] = time.perf_counter() - start
    log(f"models loaded in {seconds['load']:.1f}s; translating {task.source_view} -> {task.target_view}")
    return LoadedModels(transformer, vae, cond, uncond, task, seconds, plan.cfg_batch if plan else 2)


def translate_clip(models: LoadedModels, video_path, out_path, reference_image=None,
                   fit: FitOptions | None = None, settings: SamplingSettings | None = None,
                   positions: str = "collaborative", windows: WindowOptions | None = None,
                   frame_rate: str = "source", callback=None, audio: bool = True,
                   input_fps: float | None = None) -> TranslationResult:
    """Read one clip (only the frames the fit uses), translate it with loaded models, and write
    ``out_path`` (h264), carrying the source's audio for the span it covers unless ``audio`` is False.
    ``video_path`` may also be an open clip_source.ClipSource (as preflight leaves it)."""
    start = time.perf_counter()
    clip = read_fitted_clip(video_path, fit or FitOptions(), input_fps)
    read_seconds = time.perf_counter() - start
    result = translate_fitted(models.transformer, models.vae, models.text_embeds, models.negative_embeds,
                              clip.video, clip.info, models.task, reference_image, settings, positions, callback,
                              windows, frame_rate, models.cfg_batch, stream_output=True)
    clip.video = None  # the fitted pixels are not needed for writing: free them first
    start = time.perf_counter()
    write_video(out_path, result.frames, result.fps, audio=clip.source_audio() if audio else None)
    result.timings = {"read": read_seconds, **result.timings, "write": time.perf_counter() - start}
    result.notes = clip.notes
    return result


def translate_file(files: ModelFiles, task, video_path, out_path, reference_path=None, prompt=None,
                   negative_prompt: str = "", fit: FitOptions | None = None,
                   settings: SamplingSettings | None = None, positions: str = "collaborative",
                   lora_strength: float = 1.0, device=None, dtype=None, attention=None,
                   callback=None, windows: WindowOptions | None = None, frame_rate: str = "source",
                   log=print, audio: bool = True) -> TranslationResult:
    """Check everything (preflight: the clip, the output, the reference, the LoRA file, the options), then
    load the models one after another (the text encoder is released before the transformer loads), translate
    ``video_path`` and write ``out_path`` as h264 mp4 with the source's audio (unless ``audio`` is False)."""
    from .preflight import check_options, check_run  # noqa: PLC0415

    task = get_task(task)
    settings = settings or SamplingSettings()
    fit = check_options(settings, dataclasses.asdict(fit or FitOptions()), windows or WindowOptions(), lora_strength)
    job = check_run(task, [Path(video_path)], out_path, fit, reference=reference_path, lora=files.lora)[0][0]
    models = load_models(files, task, prompt, negative_prompt, settings.cfg, lora_strength, device, dtype,
                         attention, log)
    result = translate_clip(models, job.source, job.out, job.reference, fit, settings, positions, windows,
                            frame_rate, callback, audio=audio)
    result.timings = {**models.load_seconds, **result.timings}
    return result
