"""Flow-matching sampling of the target latents: UniPC (flow mode, the reference) or Euler,
flow shift, text-only classifier-free guidance (one batched forward, or two in a row for half the
memory), CPU-seeded noise, partial denoising from an input, and a per-step callback for progress,
previews and cancelling.

Latents here are normalised (see in_context/latents.py); the model is only reached through predict_flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..finite_checks import LatentWatch
from ..option_ranges import CFG_RANGE, SEED_RANGE, SHIFT_RANGE, STEPS_RANGE, finite_number, whole_number
from ..in_context.predict_flow import predict_flow
from ..memory.offload import execution_device
from .solvers import SOLVERS, first_step, make_scheduler
from ..in_context.windows import WindowOptions, windowed_flow


@dataclass
class SamplingSettings:
    """The authors' reference settings are the defaults."""

    steps: int = 50
    cfg: float = 5.0
    shift: float = 5.0
    solver: str = "unipc"
    seed: int = 1234
    denoise: float = 1.0

    def validate(self) -> "SamplingSettings":
        """Every number finite and inside its range (finite_checks states them); raises InputError."""
        whole_number("steps", self.steps, *STEPS_RANGE)
        finite_number("cfg", self.cfg, *CFG_RANGE, hint=" (1 = no guidance)")
        finite_number("shift", self.shift, *SHIFT_RANGE, low_open=True, hint=" (the flow shift; 5 for Wan2.2)")
        if self.solver not in SOLVERS:
            raise InputError(f"solver: {self.solver!r} is not supported; expected one of {SOLVERS}.")
        finite_number("denoise", self.denoise, 0.0, 1.0, low_open=True)
        whole_number("seed", self.seed, *SEED_RANGE)
        return self


@dataclass
class StepInfo:
    """What the per-step callback receives; raising from the callback stops sampling."""

    step: int  # 1-based index of the step just finished
    total: int
    timestep: float
    latents: torch.Tensor  # current noisy target latents (normalised)
    denoised: torch.Tensor  # the model's estimate of the clean target at this step (for previews)


def initial_noise(shape, seed: int) -> torch.Tensor:
    """Gaussian noise drawn on the CPU so a seed gives the same noise on every device."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def guided_flow(transformer, latents, timestep, cond, uncond, source, reference, positions: str, cfg: float,
                cfg_batch: int = 2):
    """The guided flow for a stack of clips (any multiple n of the conditioning batch B); cond/uncond
    [B, L, D], reference [B, ...] or None. ``cfg_batch`` 2 runs the conditional and unconditional
    passes as one batched forward, 1 runs them one after the other: the same result (to rounding)
    with half the activation memory."""
    repeat = latents.shape[0] // cond.shape[0]
    text = cond.repeat(repeat, 1, 1)
    ref = None if reference is None else reference.repeat(repeat, 1, 1, 1, 1)
    t = timestep.expand(latents.shape[0])
    if uncond is None:
        return predict_flow(transformer, latents, t, text, source, ref, positions).float()
    if cfg_batch == 1:
        flow_cond = predict_flow(transformer, latents, t, text, source, ref, positions).float()
        flow_uncond = predict_flow(transformer, latents, t, uncond.repeat(repeat, 1, 1), source, ref,
                                   positions).float()
        return flow_uncond + cfg * (flow_cond - flow_uncond)
    both = torch.cat([latents, latents])
    flow = predict_flow(transformer, both, timestep.expand(both.shape[0]), torch.cat([text, uncond.repeat(repeat, 1, 1)]),
                        torch.cat([source, source]), None if ref is None else torch.cat([ref, ref]), positions).float()
    flow_cond, flow_uncond = flow.chunk(2)
    return flow_uncond + cfg * (flow_cond - flow_uncond)


def sample_target(transformer, source, text_embeds, negative_embeds=None, reference=None,
                  positions="collaborative", settings: SamplingSettings | None = None,
                  init_latents=None, callback=None, windows: WindowOptions | None = None,
                  cfg_batch: int = 2) -> torch.Tensor:
    """Generate the target latents (normalised, float32, shaped like ``source``).

    text_embeds / negative_embeds: [B or 1, L, D]; guidance runs when cfg != 1 and a negative is given.
    init_latents: clean target latents to start from when settings.denoise < 1.
    callback: called with a StepInfo after every step; an exception raised there stops sampling
    and propagates (the model is never modified, so it stays usable).
    windows: sliding windows for clips longer than the trained length (None or one window = the plain sampler).
    cfg_batch: 2 = guidance in one batched forward, 1 = two forwards one after the other (half the memory).
    """
    settings = (settings or SamplingSettings()).validate()
    windows = None if windows is None else windows.validate()
    if cfg_batch not in (1, 2):
        raise InputError(f"cfg_batch: expected 1 (guidance as two forwards one after the other) or 2 (one "
                         f"batched forward), got {cfg_batch!r}.")
    device = execution_device(transformer)
    batch = source.shape[0]
    source = source.to(device=device, dtype=torch.float32)
    reference = None if reference is None else reference.to(device=device, dtype=torch.float32)

    def per_batch(embeds, name):
        if embeds.ndim != 3 or embeds.shape[0] not in (1, batch):
            raise InputError(f"{name}: expected [1 or {batch}, L, D], got {tuple(embeds.shape)}.")
        return embeds.to(device=device, dtype=torch.float32).expand(batch, -1, -1)

    cond = per_batch(text_embeds, "text_embeds")
    uncond = None
    if settings.cfg != 1.0 and negative_embeds is not None:
        uncond = per_batch(negative_embeds, "negative_embeds")
        if uncond.shape[1] != cond.shape[1]:
            raise InputError(f"negative_embeds has {uncond.shape[1]} tokens but text_embeds has {cond.shape[1]}; "
                             "encode both to the same length (512).")

    scheduler = make_scheduler(settings.solver, settings.shift)
    scheduler.set_timesteps(settings.steps, device=device)
    start = first_step(settings.steps, settings.denoise)
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    noise = initial_noise(source.shape, settings.seed).to(device)
    if settings.denoise < 1.0:
        if init_latents is None or init_latents.shape != source.shape:
            got = None if init_latents is None else tuple(init_latents.shape)
            raise InputError(f"denoise < 1 needs init_latents shaped like the source {tuple(source.shape)}, got {got}.")
        sigma = float(scheduler.sigmas[start])
        latents = (1.0 - sigma) * init_latents.to(device=device, dtype=torch.float32) + sigma * noise
    else:
        latents = noise

    LatentWatch.check_inputs(cond, uncond, source, reference, init_latents if settings.denoise < 1.0 else None)
    watch = LatentWatch(transformer, settings, len(timesteps), device)
    for i, t in enumerate(timesteps):
        t_model = t.to(device=device, dtype=torch.float32)

        def flow_fn(lat, src):
            return guided_flow(transformer, lat, t_model, cond, uncond, src, reference, positions, settings.cfg,
                               cfg_batch)

        flow = flow_fn(latents, source) if windows is None else windowed_flow(flow_fn, latents, source, windows)
        sigma = float(scheduler.sigmas[start + i])
        denoised = latents - sigma * flow
        latents = scheduler.step(flow, t, latents, return_dict=False)[0]
        watch.after_step(i + 1, latents)
        if callback is not None:
            callback(StepInfo(i + 1, len(timesteps), float(t), latents, denoised))
    watch.finish()
    return latents
