"""FLOP count, the byte-level memory model and the automatic choice of memory options."""


import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context import predict_flow
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
    from wan_egoexo.transformer_loader import load_transformer

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
    assert compact.peak < default.peak / 2
    # The spec's figure: the per-token modulation is 1.7 GB in fp32 per batch element.
    assert 24 * 22_880 * 3072 == pytest.approx(1.7e9, rel=0.02)
    plain = footprint.translation_peaks(704, 1280, 13, False, text_encoder_on_device=False)
    tiled = footprint.translation_peaks(704, 1280, 13, False, vae_tiling=True, text_encoder_on_device=False)
    offloaded = footprint.translation_peaks(704, 1280, 13, False, vae_tiling=True, offload_blocks=2,
                                            text_encoder_on_device=False)
    fp8 = footprint.translation_peaks(704, 1280, 13, False, vae_tiling=True, fp8=True, text_encoder_on_device=False)
    assert plain.decode > plain.sample  # untiled, the VAE decode sets the peak
    assert tiled.peak == tiled.sample < plain.peak  # tiled, it no longer does
    assert offloaded.peak < 24 * 2**30 and fp8.peak < 16 * 2**30  # the targets


def test_automatic_plan_is_the_fastest_that_fits():
    assert auto.choose_memory_plan(device="cpu") == auto.MemoryPlan(device="cpu", text_encoder_device="cpu")
    order = [(t, o, f) for t, o, f in auto.CANDIDATES]
    previous = -1
    for gib in (80, 40, 24, 16, 12, 8, 2):
        plan = auto.choose_memory_plan(device="cuda", budget_bytes=gib * 2**30)
        usable = gib * 2**30 * (1 - auto.SAFETY_FRACTION) - auto.CONTEXT_BYTES
        rank = order.index((plan.vae_tiling, plan.block_offload, plan.fp8_weights))
        assert plan.fits == (plan.estimated_peak_bytes <= usable)
        assert rank >= previous  # less memory never picks a faster option set
        previous = rank
        for faster in order[:rank]:  # every faster option set is estimated not to fit
            tiling, offload, fp8 = faster
            peak = footprint.translation_peaks(704, 1280, 13, False, fp8=fp8, offload_blocks=2 if offload else None,
                                               vae_tiling=tiling, text_encoder_on_device=False).peak
            assert peak > usable
    assert not auto.choose_memory_plan(device="cuda", budget_bytes=2 * 2**30).fits
    with pytest.raises(InputError, match="frames"):
        auto.choose_memory_plan(frames=48, device="cuda", budget_bytes=2**34)


