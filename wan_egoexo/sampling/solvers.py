"""The reference flow-matching solvers, host-free: their diffusers scheduler configuration, the sigma
schedule ``sample_target`` steps through, and stepping latents over an explicit sigma list.

The reference is diffusers' ``UniPCMultistepScheduler`` in flow-prediction mode (the Wan2.2
scheduler config: order 2, bh2, flow sigmas shifted by ``shift``, final sigma 0); ``euler`` is
diffusers' ``FlowMatchEulerDiscreteScheduler``. Two quirks of the reference are part of its
result and are kept: UniPC evaluates the model at *integer* timesteps, floor(1000 sigma), while
its update uses the sigma itself; and its first sigma is 1 - 1e-6, not 1.

``FlowSolver`` drives the same diffusers scheduler over any explicit sigma list (a ComfyUI
SIGMAS, say): it configures the scheduler with shift 1 (the identity) so the sigmas are used as
given. So a host that hands the model's flow to ``FlowSolver`` reproduces ``sample_target``'s
steps for ``reference_sigmas``. diffusers is imported only when a scheduler is made, so this
module is cheap to import (node schemas read SOLVERS from here).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError

SOLVERS = ("unipc", "euler")
NUM_TRAIN_TIMESTEPS = 1000


def check_solver(solver) -> str:
    if solver not in SOLVERS:
        raise InputError(f"solver: {solver!r} is not supported; expected one of {SOLVERS}.")
    return solver


def make_scheduler(solver: str = "unipc", shift: float = 5.0):
    """The reference solver is diffusers' UniPC in flow-prediction mode (the Wan2.2 scheduler config)."""
    check_solver(solver)
    if solver == "unipc":
        from diffusers import UniPCMultistepScheduler  # noqa: PLC0415

        return UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True,
            flow_shift=shift, solver_order=2, solver_type="bh2", final_sigmas_type="zero",
        )
    from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: PLC0415

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)


def first_step(steps: int, denoise: float) -> int:
    """Index of the first of ``steps`` scheduled steps that a partial denoise runs (0 when denoise = 1)."""
    return steps - max(1, round(steps * denoise))


def _check_schedule(steps, shift, denoise) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise InputError(f"steps: expected an integer from 1 to 1000, got {steps!r}.")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise InputError(f"shift: expected a flow shift > 0, got {shift!r}.")
    if not (isinstance(denoise, (int, float)) and 0 < denoise <= 1):
        raise InputError(f"denoise: expected a strength in (0, 1], got {denoise!r}.")


def _integer_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """floor(1000 sigma) as UniPC computes it (sigma as float64)."""
    return torch.from_numpy((sigmas.double().numpy() * NUM_TRAIN_TIMESTEPS).astype(np.int64))


def reference_sigmas(solver: str = "unipc", steps: int = 50, shift: float = 5.0, denoise: float = 1.0) -> torch.Tensor:
    """The sigmas (float32, CPU, ending with 0) that ``sample_target`` steps through for these settings.

    For UniPC the model's integer timestep is floor(1000 sigma) of the scheduler's float64 sigma;
    where rounding that sigma to float32 moves it across an integer (rare: a few shift/step pairs),
    the float32 sigma is moved by one float32 step so that ``FlowSolver`` recovers the same timestep.
    """
    check_solver(solver)
    _check_schedule(steps, shift, denoise)
    scheduler = make_scheduler(solver, float(shift))
    scheduler.set_timesteps(steps, device="cpu")
    start = first_step(steps, denoise)
    sigmas = scheduler.sigmas[start:].detach().to(device="cpu", dtype=torch.float32).clone()
    if solver == "unipc":
        wanted = scheduler.timesteps[start:].cpu()
        for i, timestep in enumerate(wanted.tolist()):
            got = int(_integer_timesteps(sigmas[i:i + 1]))
            if got != timestep:
                toward = torch.tensor(math.inf if got < timestep else -math.inf)
                sigmas[i] = torch.nextafter(sigmas[i], toward)
    return sigmas


def _as_sigma_list(sigmas, solver: str) -> torch.Tensor:
    values = torch.as_tensor(sigmas).detach().to(device="cpu", dtype=torch.float32).flatten()
    problem = None
    if values.numel() < 2:
        problem = f"has {values.numel()} value(s)"
    elif not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        problem = "holds values outside 0..1 (flow-matching sigmas)"
    elif (values[1:] > values[:-1]).any():
        problem = "is not decreasing"
    elif solver == "unipc" and (values[1:] == values[:-1]).any():
        problem = "repeats a value (UniPC needs each step to lower sigma)"
    if problem:
        raise InputError(f"sigmas: {problem}; expected at least two decreasing flow-matching sigmas from 1 towards 0, "
                         "e.g. from WorldWander Sigmas.")
    return values


class FlowSolver:
    """Steps latents over an explicit sigma list with the reference solver's own diffusers scheduler.

    ``model_timestep(i)`` is where the model must be evaluated for step i (the 0..1000 scale: floor
    for UniPC, 1000 sigma for Euler); ``step(i, flow, latents)`` takes the model's flow (velocity
    noise - x0) there and returns the latents at sigma i+1. Steps run in order, each once.
    """

    def __init__(self, solver: str, sigmas):
        self.solver = check_solver(solver)
        self.sigmas = _as_sigma_list(sigmas, solver)
        scheduler = make_scheduler(solver, shift=1.0)  # shift 1 is the identity: the sigmas are used as given
        scheduler.set_timesteps(sigmas=self.sigmas[:-1].double().numpy(), device="cpu")
        scheduler.sigmas[-1] = self.sigmas[-1]  # a split schedule may end above 0
        scheduler.set_begin_index(0)
        if solver == "unipc" and int(scheduler.timesteps.min()) < 1:
            raise InputError(f"sigmas: {float(self.sigmas[:-1].min()):g} is below 0.001 before the last step; "
                             "UniPC evaluates the model at integer timesteps floor(1000 sigma), which would be 0.")
        self.scheduler = scheduler
        self._next = 0

    def __len__(self) -> int:
        return len(self.sigmas) - 1

    def model_timestep(self, i: int) -> float:
        return float(self.scheduler.timesteps[i])

    def step(self, i: int, flow: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if i != self._next:
            raise InputError(f"step: expected step {self._next} next, got {i}; the solver's steps run in order.")
        self._next += 1
        return self.scheduler.step(flow, self.scheduler.timesteps[i], latents, return_dict=False)[0]


def solve(solver: str, flow_at, latents: torch.Tensor, sigmas, on_step=None) -> torch.Tensor:
    """Integrate ``latents`` (at sigmas[0]) to sigmas[-1] with the reference ``solver``.

    flow_at(latents, timestep) -> the model's flow at that timestep (0..1000 scale, a float);
    on_step(i, latents, flow), if given, is called after each model evaluation, before the update.
    """
    flow_solver = FlowSolver(solver, sigmas)
    for i in range(len(flow_solver)):
        flow = flow_at(latents, flow_solver.model_timestep(i))
        if on_step is not None:
            on_step(i, latents, flow)
        latents = flow_solver.step(i, flow, latents)
    return latents
