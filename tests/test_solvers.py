"""The reference solvers over explicit sigmas: ``solve`` over ``reference_sigmas`` reproduces
``sample_target`` step for step, the model is evaluated where diffusers evaluates it, and bad
sigma lists are named."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.sampling.sampler import SamplingSettings, guided_flow, initial_noise, make_scheduler, sample_target
from wan_egoexo.sampling.solvers import FlowSolver, reference_sigmas, solve

SHAPE = (1, 48, 2, 4, 4)


def _conds(reference):
    g = torch.Generator().manual_seed(5)
    source = torch.randn(*SHAPE, generator=g)
    ref = torch.randn(1, 48, 1, 4, 4, generator=g) if reference else None
    return source, ref, torch.randn(1, 6, 32, generator=g), torch.zeros(1, 6, 32)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
@pytest.mark.parametrize("reference", [False, True], ids=["exo2ego", "ego2exo"])
@torch.no_grad()
def test_solve_over_reference_sigmas_is_sample_target(tiny_transformer, solver, reference):
    source, ref, cond, uncond = _conds(reference)
    settings = SamplingSettings(steps=5, cfg=4.0, solver=solver, seed=9)
    expected = sample_target(tiny_transformer, source, cond, uncond, reference=ref, settings=settings)

    def flow_at(latents, timestep):
        t = torch.tensor(timestep, dtype=torch.float32)
        return guided_flow(tiny_transformer, latents, t, cond, uncond, source, ref, "collaborative", 4.0)

    ours = solve(solver, flow_at, initial_noise(SHAPE, 9), reference_sigmas(solver, 5, 5.0))
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
@torch.no_grad()
def test_partial_denoise_sigmas_start_where_sample_target_starts(tiny_transformer, solver):
    source, _, cond, uncond = _conds(False)
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    settings = SamplingSettings(steps=10, cfg=1.0, solver=solver, seed=4, denoise=0.4)
    expected = sample_target(tiny_transformer, source, cond, None, init_latents=init, settings=settings)
    sigmas = reference_sigmas(solver, 10, 5.0, denoise=0.4)
    assert len(sigmas) == 4 + 1
    start = (1 - sigmas[0]) * init + sigmas[0] * initial_noise(SHAPE, 4)

    def flow_at(latents, timestep):
        return guided_flow(tiny_transformer, latents, torch.tensor(timestep), cond, None, source, None,
                           "collaborative", 1.0)

    assert torch.equal(solve(solver, flow_at, start, sigmas), expected)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
def test_model_timesteps_are_the_schedulers_own(solver, shift):
    # shift 1 with 185 steps is a case where float32 sigmas alone would move 17 UniPC timesteps
    for steps in (1, 2, 7, 50, 185):
        scheduler = make_scheduler(solver, shift)
        scheduler.set_timesteps(steps)
        sigmas = reference_sigmas(solver, steps, shift)
        flow_solver = FlowSolver(solver, sigmas)
        assert [flow_solver.model_timestep(i) for i in range(steps)] == scheduler.timesteps.float().tolist()
        torch.testing.assert_close(sigmas, scheduler.sigmas.float(), rtol=2e-7, atol=0)
        assert sigmas[-1] == 0


def test_stock_style_sigmas_from_one_run_without_nans():
    # ComfyUI's own schedulers start at sigma 1; UniPC's log(alpha) needs the scheduler's 1 - 1e-6 there
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    latents = solve("unipc", lambda x, t: x * 0.1, torch.ones(2, 3), sigmas)
    assert torch.isfinite(latents).all()
    assert FlowSolver("unipc", sigmas).model_timestep(0) == 999.0


def test_euler_over_a_split_schedule_equals_the_whole():
    sigmas = reference_sigmas("euler", 6, 5.0)
    flow_at = lambda x, t: torch.sin(x) + t / 1000  # noqa: E731
    start = torch.linspace(-1, 1, 12).view(3, 4)
    whole = solve("euler", flow_at, start, sigmas)
    halves = solve("euler", flow_at, solve("euler", flow_at, start, sigmas[:4]), sigmas[3:])
    assert torch.equal(whole, halves)


@pytest.mark.parametrize("sigmas, message", [
    ([1.0], "1 value"),
    ([1.0, 0.5, 0.7, 0.0], "not decreasing"),
    ([1.5, 0.5, 0.0], "outside 0..1"),
    ([1.0, float("nan"), 0.0], "outside 0..1"),
    ([1.0, 0.5, 0.5, 0.0], "repeats"),
    ([1.0, 0.0005, 0.0], "below 0.001"),
])
def test_bad_sigmas_are_named(sigmas, message):
    with pytest.raises(InputError, match=f"sigmas: .*{message}"):
        FlowSolver("unipc", torch.tensor(sigmas))


def test_bad_schedule_settings_are_named():
    with pytest.raises(InputError, match="steps"):
        reference_sigmas("unipc", 0, 5.0)
    with pytest.raises(InputError, match="shift"):
        reference_sigmas("unipc", 4, 0.0)
    with pytest.raises(InputError, match="denoise"):
        reference_sigmas("unipc", 4, 5.0, denoise=0.0)
    with pytest.raises(InputError, match="solver: 'ddim'"):
        reference_sigmas("ddim", 4, 5.0)


def test_steps_run_in_order():
    flow_solver = FlowSolver("euler", reference_sigmas("euler", 3, 5.0))
    with pytest.raises(InputError, match="step 0 next"):
        flow_solver.step(1, torch.zeros(2), torch.zeros(2))
