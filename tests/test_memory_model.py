"""FLOP count, the byte-level memory model and the automatic choice of memory options."""


import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.memory import auto, footprint
from wan_egoexo.memory.flops import WAN22_5B_CONFIG, predict_flow_flops
from wan_egoexo.memory.fp8_weights import enable_fp8_storage
from wan_egoexo.memory.modulation import (enable_compact_modulation)
from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG, build_tiny_transformer

from memory_helpers import memory_inputs


# ------------------------------------------------------------------ FLOPs, memory model, automatic choice

def test_flop_count_matches_torch_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = build_tiny_transformer(0)
    args = memory_inputs(text_tokens=512)
    for compact in (False, True):
        if compact:
            enable_compact_modulation(model)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            predict_flow(model, *args)  # the math kernel is plain matmuls, which the counter sees
        ours = predict_flow_flops(TINY_TRANSFORMER_CONFIG, 3, 8, 12, has_reference=True, batch=2,
                                  timestep_rows=2 if compact else None)
        assert ours.total == counter.get_total_flops()


def test_flop_count_of_the_5b_matches_the_spec():
    step = predict_flow_flops(WAN22_5B_CONFIG, 13, 44, 80)
    assert step.tokens == 22_880
    assert step.linear == pytest.approx(0.2e15, rel=0.03)
    assert step.self_attention == pytest.approx(0.19e15, rel=0.03)
    assert step.total == pytest.approx(0.39e15, rel=0.05)
    assert predict_flow_flops(WAN22_5B_CONFIG, 13, 44, 80, has_reference=True).tokens == 23_760


def test_weight_bytes_match_a_loaded_model(tmp_path):
    from wan_egoexo.tiny.transformer import save_transformer_single_file
    from wan_egoexo.models.transformer_loader import load_transformer

    path = tmp_path / "t.safetensors"
    save_transformer_single_file(build_tiny_transformer(0), path)
    model = load_transformer(path, device="cpu", dtype="bf16")
    actual = sum(p.numel() * p.element_size() for p in model.parameters())
    assert footprint.transformer_weight_bytes(TINY_TRANSFORMER_CONFIG, torch.bfloat16).total == actual
    enable_fp8_storage(model)
    actual_fp8 = sum(p.numel() * p.element_size() for p in model.parameters())
    assert footprint.transformer_weight_bytes(TINY_TRANSFORMER_CONFIG, torch.bfloat16, fp8=True).total == actual_fp8


def test_lora_bytes_match_applied_adapters(tmp_path):
    from wan_egoexo.lora import apply_lora
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt

    model = build_tiny_transformer(0)
    apply_lora(model, save_worldwander_ckpt(random_lora_state_dict(model, rank=4), tmp_path / "l.ckpt"))
    actual = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
    assert footprint.lora_bytes(TINY_TRANSFORMER_CONFIG, rank=4, dtype=torch.float32) == actual


def test_memory_model_orders_the_options():
    default = footprint.predict_flow_activation_bytes(WAN22_5B_CONFIG, 22_880, 2, torch.bfloat16, False)
    compact = footprint.predict_flow_activation_bytes(WAN22_5B_CONFIG, 22_880, 2, torch.bfloat16, True)
    sequential = footprint.predict_flow_activation_bytes(WAN22_5B_CONFIG, 22_880, 1, torch.bfloat16, True)
    assert compact.peak < default.peak / 2
    assert sequential.peak == pytest.approx(compact.peak / 2, rel=0.01)  # sequential CFG halves the activations
    # The spec's figure: the per-token modulation is 1.7 GB in fp32 per batch element.
    assert 24 * 22_880 * 3072 == pytest.approx(1.7e9, rel=0.02)
    plain = footprint.translation_peaks(704, 1280, 13, False, text_encoder_on_device=False)
    tiled = footprint.translation_peaks(704, 1280, 13, False, vae_tiling=True, text_encoder_on_device=False)
    streamed = footprint.translation_peaks(704, 1280, 13, False, 1, vae_tiling=True, resident_blocks=0,
                                           text_encoder_on_device=False)
    fp8 = footprint.translation_peaks(704, 1280, 13, False, vae_tiling=True, fp8=True, text_encoder_on_device=False)
    assert plain.decode > plain.sample  # untiled, the VAE decode sets the peak
    assert tiled.peak == tiled.sample < plain.peak  # tiled, it no longer does
    assert streamed.peak < 8 * 2**30 and fp8.peak < 16 * 2**30
    weights = footprint.transformer_weight_bytes(WAN22_5B_CONFIG)
    # N resident blocks, plus the running and the prefetched one
    assert footprint.transformer_device_bytes(WAN22_5B_CONFIG, resident_blocks=10) == \
        weights.other + 12 * weights.per_block
    assert footprint.transformer_device_bytes(WAN22_5B_CONFIG, resident_blocks=29) == weights.total
    merged, unfused = (footprint.sampling_bytes(22_880, 2, lora_rank=rank) for rank in (0, 80))
    assert unfused - merged == footprint.lora_bytes(WAN22_5B_CONFIG, 80)


def _exact_then_lossy(plan):
    """Rank of a plan in the documented order: batched, sequential, offloaded, + tiling, fp8, fp8 + offload."""
    if plan.fp8_weights:
        return 5 if plan.block_offload else 4
    if plan.vae_tiling:
        return 3
    if plan.block_offload:
        return 2
    return 0 if plan.cfg_batch == 2 else 1


def test_automatic_plan_takes_exact_savings_first_and_keeps_as_many_blocks_as_fit():
    assert auto.choose_memory_plan(device="cpu") == auto.MemoryPlan(device="cpu", text_encoder_device="cpu")
    previous = -1
    for gib in (80, 40, 30, 26, 24, 20, 16, 12, 10, 8, 6, 2):
        plan = auto.choose_memory_plan(device="cuda", budget_bytes=gib * 2**30)
        usable = auto.usable_bytes(gib * 2**30)
        rank = _exact_then_lossy(plan)
        assert plan.fits == (plan.estimated_peak_bytes <= usable)
        assert rank >= previous  # less memory never picks a faster option set
        previous = rank

        def peak(batch=plan.cfg_batch, resident=plan.resident_blocks, tiling=False, fp8=False):
            return footprint.translation_peaks(704, 1280, 13, False, batch, resident_blocks=resident,
                                               vae_tiling=tiling, fp8=fp8, text_encoder_on_device=False).peak

        assert peak(tiling=plan.vae_tiling, fp8=plan.fp8_weights) == plan.estimated_peak_bytes
        if rank >= 1:
            assert peak(batch=2, resident=None) > usable  # batched guidance did not fit
        if rank >= 2:
            assert peak(batch=1, resident=None) > usable
        if plan.block_offload and plan.fits and plan.resident_blocks < 29:  # one more resident block would not fit
            assert peak(resident=plan.resident_blocks + 1, tiling=plan.vae_tiling, fp8=plan.fp8_weights) > usable
        if rank >= 3:  # lossy only when no exact option fits, even with every block streamed
            assert peak(batch=1, resident=0) > usable
    assert not auto.choose_memory_plan(device="cuda", budget_bytes=2 * 2**30).fits
    fixed = auto.choose_memory_plan(device="cuda", cfg_batch=2, budget_bytes=16 * 2**30)
    assert fixed.cfg_batch == 2 and fixed.block_offload
    assert auto.choose_memory_plan(device="cuda", guidance=False, budget_bytes=80 * 2**30).cfg_batch == 1
    one, stacked = (auto.choose_memory_plan(device="cuda", budget_bytes=80 * 2**30, clips_per_forward=n)
                    for n in (1, 3))  # --window-batch 3: three windows per forward
    assert stacked.estimated_peak_bytes > one.estimated_peak_bytes
    with pytest.raises(InputError, match="frames"):
        auto.choose_memory_plan(frames=48, device="cuda", budget_bytes=2**34)
    with pytest.raises(InputError, match="cfg_batch"):
        auto.choose_memory_plan(device="cuda", cfg_batch=3, budget_bytes=2**34)


def test_sampling_plan_is_sized_to_the_clip():
    """The sampler plans for the clip it gets: a longer or larger clip keeps fewer blocks resident."""

    def plan(frames, height, width, reference=False, gib=10):
        found = auto.choose_sampling_plan(frames, height, width, reference, device="cuda", budget_bytes=gib * 2**30)
        assert found.fits
        return found

    small, full, ego2exo, longer = plan(13, 30, 52), plan(13, 44, 80), plan(13, 44, 80, True), plan(21, 44, 80)
    assert small.cfg_batch == full.cfg_batch == longer.cfg_batch == 1  # sequential guidance before offloading
    assert small.resident_blocks > full.resident_blocks > longer.resident_blocks > 0
    assert full.resident_blocks >= ego2exo.resident_blocks
    roomy = plan(13, 44, 80, gib=40)
    assert roomy.cfg_batch == 2 and roomy.resident_blocks is None
    assert plan(13, 44, 80, gib=14).resident_blocks is None  # sequential guidance alone is enough
