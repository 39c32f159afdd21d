"""Non-finite numbers stop the run: option ranges, the sampler's latent watch (which step, which
cause, read back only every few steps), and the decode check."""

import math

import pytest
import torch

from wan_egoexo.errors import InputError, NonFiniteError
from wan_egoexo.finite_checks import LatentWatch
from wan_egoexo.option_ranges import check_lora_strength
from wan_egoexo.in_context.latents import decode_latents
from wan_egoexo.lora import active_loras, apply_lora, set_lora_strength
from wan_egoexo.sampling.sampler import SamplingSettings, sample_target
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
from wan_egoexo.tiny.vae import build_tiny_vae

SHAPE = (1, 48, 2, 4, 4)


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(*SHAPE, generator=g), torch.randn(1, 6, 32, generator=g), torch.zeros(1, 6, 32)


@pytest.mark.parametrize("field, value", [
    ("cfg", math.inf), ("cfg", math.nan), ("cfg", -0.5), ("cfg", 101.0), ("cfg", "5"),
    ("shift", 1e300), ("shift", 0.0), ("shift", math.nan), ("shift", -math.inf),
    ("denoise", math.nan), ("denoise", 0.0), ("steps", True), ("steps", 2.0), ("steps", 1001),
    ("seed", -1), ("seed", 2**64), ("seed", False), ("seed", 1.0),
])
def test_settings_must_be_finite_and_in_range(field, value):
    with pytest.raises(InputError, match=f"^{field}: expected") as info:
        SamplingSettings(**{field: value}).validate()
    assert repr(value) in str(info.value)


def test_range_edges_are_accepted():
    SamplingSettings(steps=1000, cfg=100.0, shift=100.0, denoise=1.0, seed=2**64 - 1).validate()
    SamplingSettings(steps=1, cfg=0, shift=1e-3, denoise=1e-3, seed=0).validate()
    assert check_lora_strength(-100) == -100.0 and check_lora_strength(0) == 0.0


@pytest.mark.parametrize("strength", [1e30, -101.0, math.nan, math.inf, "1", None])
def test_lora_strength_must_be_finite_and_in_range(tmp_path, tiny_transformer, strength):
    path = save_worldwander_ckpt(random_lora_state_dict(tiny_transformer, rank=2), tmp_path / "l.ckpt")
    with pytest.raises(InputError, match=r"strength: expected a finite number in \[-100, 100\]"):
        apply_lora(tiny_transformer, path, strength=strength)
    assert active_loras(tiny_transformer) == {}
    name = apply_lora(tiny_transformer, path, strength=1.0)
    with pytest.raises(InputError, match="strength"):
        set_lora_strength(tiny_transformer, name, strength)
    assert active_loras(tiny_transformer) == {name: 1.0}


def test_latents_are_read_back_every_few_steps_and_the_first_bad_step_is_named(tiny_transformer, monkeypatch):
    reads = []
    real = LatentWatch._read_back
    monkeypatch.setattr(LatentWatch, "_read_back", lambda self, step: reads.append(step) or real(self, step))
    watch = LatentWatch(tiny_transformer, SamplingSettings(), total=12, device="cpu", every=5)
    good = torch.zeros(SHAPE)
    for step in range(1, 13):
        watch.after_step(step, good)
    watch.finish()
    assert reads == [5, 10, 12]  # three host reads for twelve steps
    watch = LatentWatch(tiny_transformer, SamplingSettings(cfg=7.0), total=12, device="cpu", every=5)
    bad = torch.zeros(SHAPE)
    bad[0, 0, 0, 0, 0] = math.inf
    watch.after_step(1, good)
    watch.after_step(2, good)
    watch.after_step(3, bad)
    watch.after_step(4, bad)
    with pytest.raises(NonFiniteError, match="at step 3 of 12: every weight is finite.*cfg 7"):
        watch.after_step(5, bad)


@torch.no_grad()
def test_nan_weights_are_named_as_the_cause(tiny_transformer):
    source, cond, uncond = _inputs()
    tiny_transformer.blocks[1].ffn.net[2].weight[3, 5] = math.nan
    with pytest.raises(NonFiniteError, match=r"step 1 of 3: the transformer's weights hold NaN/Inf "
                                             r"\(blocks\.1\.ffn\.net\.2\.weight\)"):
        sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=3))


@torch.no_grad()
def test_a_nan_lora_is_named_as_the_cause(tmp_path, tiny_transformer):
    source, cond, uncond = _inputs()
    state = random_lora_state_dict(tiny_transformer, rank=2, seed=4)
    state[next(k for k in state if k.endswith("lora_B.weight"))][0, 0] = math.nan
    apply_lora(tiny_transformer, save_worldwander_ckpt(state, tmp_path / "broken.ckpt"), name="broken")
    with pytest.raises(NonFiniteError, match="the LoRA 'broken' has NaN/Inf weights"):
        sample_target(tiny_transformer, source, cond, uncond, settings=SamplingSettings(steps=2))


@torch.no_grad()
def test_an_overflow_names_the_settings_and_a_bad_input_is_named_before_the_first_step(tiny_transformer):
    source, cond, uncond = _inputs()
    with pytest.raises(NonFiniteError, match="overflowed during sampling; lower one of: cfg 5; shift 5"):
        sample_target(tiny_transformer, source, cond * 1e38, uncond, settings=SamplingSettings(steps=2))
    calls = []
    tiny_transformer.register_forward_hook(lambda *a: calls.append(1))
    damaged = cond.clone()
    damaged[0, 2, 7] = math.nan
    with pytest.raises(NonFiniteError, match="text_embeds holds NaN or Inf values: the prompt embedding is damaged"):
        sample_target(tiny_transformer, source, damaged, uncond, settings=SamplingSettings(steps=2))
    assert calls == []


@torch.no_grad()
def test_decode_refuses_non_finite_latents_and_output():
    vae = build_tiny_vae(seed=2)
    latents = torch.zeros(1, vae.config.z_dim, 2, 2, 2)
    latents[0, 1, 0, 0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="the latents to decode"):
        decode_latents(vae, latents)
    vae.decoder.conv_out.weight.data[0].fill_(math.inf)
    with pytest.raises(NonFiniteError, match="the decoded video holds NaN or Inf values: the VAE decoded"):
        decode_latents(vae, torch.zeros(1, vae.config.z_dim, 2, 2, 2))
