"""Sampler: seeded reproducibility, batched CFG equals the authors' two sequential passes,
cancelling from the callback, partial denoising, and argument errors."""

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.sampling.sampler import SamplingSettings, initial_noise, make_scheduler, sample_target

SHAPE = (1, 48, 2, 4, 4)


def _conds(reference=False):
    g = torch.Generator().manual_seed(11)
    source = torch.randn(*SHAPE, generator=g)
    ref = torch.randn(1, 48, 1, 4, 4, generator=g) if reference else None
    cond = torch.randn(1, 6, 32, generator=g)
    uncond = torch.zeros(1, 6, 32)
    return source, ref, cond, uncond


@torch.no_grad()
def test_same_seed_same_result_and_noise_is_cpu_seeded(tiny_transformer):
    source, _, cond, uncond = _conds()
    settings = SamplingSettings(steps=3, seed=7)
    a = sample_target(tiny_transformer, source, cond, uncond, settings=settings)
    b = sample_target(tiny_transformer, source, cond, uncond, settings=settings)
    c = sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=3, seed=8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    assert torch.equal(initial_noise(SHAPE, 7), expected)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
@pytest.mark.parametrize("reference", [False, True])
@torch.no_grad()
def test_batched_cfg_equals_sequential_passes(tiny_transformer, solver, reference):
    source, ref, cond, uncond = _conds(reference)
    settings = SamplingSettings(steps=4, cfg=5.0, solver=solver, seed=3)
    ours = sample_target(tiny_transformer, source, cond, uncond, reference=ref, settings=settings)
    # the authors' loop: two forwards per step, guidance, scheduler step
    scheduler = make_scheduler(solver, 5.0)
    scheduler.set_timesteps(4)
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    for t in scheduler.timesteps:
        v_cond = predict_flow(tiny_transformer, latents, t.float().expand(1), cond, source, ref)
        v_uncond = predict_flow(tiny_transformer, latents, t.float().expand(1), uncond, source, ref)
        latents = scheduler.step(v_uncond + 5.0 * (v_cond - v_uncond), t, latents, return_dict=False)[0]
    torch.testing.assert_close(ours, latents, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.no_grad()
def test_sequential_cfg_equals_batched_within_rounding(tiny_transformer, monkeypatch, dtype):
    import wan_egoexo.sampling.sampler as sampling
    batches = []
    real = sampling.predict_flow
    monkeypatch.setattr(sampling, "predict_flow", lambda m, x, *a: batches.append(x.shape[0]) or real(m, x, *a))
    model = tiny_transformer.to(dtype)
    source, ref, cond, uncond = _conds(reference=True)
    settings = SamplingSettings(steps=3, cfg=5.0, seed=3)
    batched = sample_target(model, source, cond, uncond, reference=ref, settings=settings, cfg_batch=2)
    sequential = sample_target(model, source, cond, uncond, reference=ref, settings=settings, cfg_batch=1)
    assert batches == [2, 2, 2, 1, 1, 1, 1, 1, 1]  # half the batch per forward, twice as many forwards
    if dtype == torch.float32:
        torch.testing.assert_close(sequential, batched, rtol=1e-5, atol=1e-5)
    else:  # a bf16 matmul may block a batch of 1 and of 2 differently: the last bit of bf16 at most
        assert float((sequential - batched).norm() / batched.norm()) < 1e-2
    with pytest.raises(InputError, match="cfg_batch"):
        sample_target(model, source, cond, uncond, settings=settings, cfg_batch=3)


@torch.no_grad()
def test_cfg_one_runs_conditional_only(tiny_transformer, monkeypatch):
    import wan_egoexo.sampling.sampler as sampling
    batches = []
    real = sampling.predict_flow
    monkeypatch.setattr(sampling, "predict_flow", lambda m, x, *a: batches.append(x.shape[0]) or real(m, x, *a))
    source, _, cond, uncond = _conds()
    sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=2, cfg=1.0))
    sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=2, cfg=3.0))
    assert batches == [1, 1, 2, 2]


@torch.no_grad()
def test_callback_reports_steps_and_can_cancel(tiny_transformer):
    source, _, cond, uncond = _conds()
    before = {k: v.clone() for k, v in tiny_transformer.state_dict().items()}
    seen = []

    class Stop(Exception):
        pass

    def callback(info):
        seen.append((info.step, info.total, info.denoised.shape))
        if info.step == 2:
            raise Stop

    with pytest.raises(Stop):
        sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=5), callback=callback)
    assert seen == [(1, 5, torch.Size(SHAPE)), (2, 5, torch.Size(SHAPE))]
    after = tiny_transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@torch.no_grad()
def test_partial_denoise_starts_from_noised_input(tiny_transformer):
    source, _, cond, uncond = _conds()
    init = torch.randn(SHAPE, generator=torch.Generator().manual_seed(99))
    steps = []
    out = sample_target(tiny_transformer, source, cond, uncond, init_latents=init,
                        settings=SamplingSettings(steps=10, denoise=0.3, seed=1),
                        callback=lambda info: steps.append(info.timestep))
    assert len(steps) == 3
    scheduler = make_scheduler("unipc", 5.0)
    scheduler.set_timesteps(10)
    assert steps == [float(t) for t in scheduler.timesteps[7:]]
    assert out.shape == init.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("settings, message", [
    (SamplingSettings(steps=0), "steps"), (SamplingSettings(solver="ddim"), "solver"),
    (SamplingSettings(denoise=1.5), "denoise"), (SamplingSettings(shift=0), "shift"),
    (SamplingSettings(denoise=0.5), "init_latents"),
])
def test_bad_settings_are_named(tiny_transformer, settings, message):
    source, _, cond, uncond = _conds()
    with pytest.raises(InputError, match=message):
        sample_target(tiny_transformer, source, cond, uncond, settings=settings)
