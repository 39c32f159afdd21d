"""The Sampler node's memory and LoRA choices: sequential guidance and unfused adapters give the
results of the defaults (batched guidance, merged LoRAs) within rounding, the plan is made for the
clip the Sampler gets, and the Model Loader's memory mode reaches the plan."""

import dataclasses
import sys

import pytest
import torch

import wan_egoexo.memory.runtime as runtime
from wan_egoexo.errors import InputError

from stub_comfy_host import (LORA_FILE, exo2ego_inputs, host, load_pack, models_dir, nodes,  # noqa: F401
                             run, sampler_args)


def host_module():
    """The pack's nodes/host.py as the pack imported it (the nodes look its functions up at call time)."""
    return sys.modules[f"{load_pack().__name__}.nodes.host"]


def test_sequential_guidance_and_unfused_loras_equal_the_defaults(host, nodes, monkeypatch):
    model, vae, text, _, context = exo2ego_inputs(nodes)
    model = run(nodes, "WorldWanderLoraLoader", model, LORA_FILE, 0.7)[0]
    batches = []
    real = runtime.prepare_for_sampling
    monkeypatch.setattr(runtime, "prepare_for_sampling",
                        lambda transformer, loras, resident, device, mode, *rest: batches.append(mode) or
                        real(transformer, loras, resident, device, mode, *rest))
    outputs = {}
    for cfg_batch in ("batched", "sequential"):
        for lora_mode in ("merged", "unfused"):
            outputs[cfg_batch, lora_mode] = run(nodes, "WorldWanderSampler", model, context, text,
                                                **sampler_args(steps=2), cfg_batch=cfg_batch,
                                                lora_mode=lora_mode)[0]["samples"]
            assert bool(getattr(model.transformer, "peft_config", None)) == (lora_mode == "unfused")
    reference = outputs["batched", "merged"]
    for key, samples in outputs.items():
        torch.testing.assert_close(samples, reference, rtol=1e-4, atol=1e-5, msg=str(key))
    assert batches == ["merged", "unfused", "merged", "unfused"]
    with pytest.raises(InputError, match="cfg_batch / lora_mode"):
        run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=1), cfg_batch="twice")


def test_the_sampler_plans_for_the_clip_it_gets(host, nodes, monkeypatch):
    model, vae, text, _, context = exo2ego_inputs(nodes)
    plans = []
    real = runtime.plan_sampling
    monkeypatch.setattr(runtime, "plan_sampling", lambda *a, **k: plans.append((a, k)) or real(*a, **k))
    run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=1), cfg_batch="sequential")
    run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=1, cfg=1.0))
    (args, kwargs), (_, unguided) = plans
    transformer, mode, _device, frames, height, width, has_reference = args
    assert transformer is model.transformer and mode == model.memory == "auto"
    assert (frames, height, width) == tuple(context.source.shape[2:]) and has_reference is False
    assert kwargs["guidance"] is True and kwargs["cfg_batch"] == 1 and unguided["guidance"] is False


def test_memory_modes_set_the_resident_blocks_on_a_gpu_plan(monkeypatch):
    """On a CUDA device "resident" keeps every block, "offload" streams them all, "auto" takes the
    planner's count (here planned without a GPU by giving the free memory)."""
    from wan_egoexo.tiny.transformer import build_tiny_transformer

    model = build_tiny_transformer(0)
    monkeypatch.setattr(runtime, "free_device_memory", lambda device: 2**20)
    monkeypatch.setattr(runtime, "device_bytes", lambda module, device: 0)
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("wan_egoexo.memory.auto.choose_attention_backend", lambda device, dtype: "sdpa")
    plans = {mode: runtime.plan_sampling(model, mode, "cuda", 3, 4, 6, False, guidance=True)
             for mode in ("auto", "resident", "offload")}
    assert plans["resident"].resident_blocks is None and plans["offload"].resident_blocks == 0
    assert plans["auto"].cfg_batch == 1 and plans["auto"].resident_blocks is not None


def test_the_sampler_releases_the_transformer_from_comfyui_only_before_streaming_its_blocks(host, nodes,
                                                                                             monkeypatch):
    """A transformer whose blocks the pack streams must not stay in ComfyUI's list of loaded models
    (see test_memory_management for ComfyUI's side); a resident one stays ComfyUI's."""
    model, _vae, text, _, context = exo2ego_inputs(nodes)
    released, set_up = [], []
    monkeypatch.setattr(host_module(), "release", lambda transformer: released.append(transformer))
    monkeypatch.setattr(runtime, "prepare_for_sampling",
                        lambda transformer, loras, resident, *rest: set_up.append((len(released), resident)))
    real = runtime.plan_sampling
    for resident in (None, 0):
        monkeypatch.setattr(runtime, "plan_sampling", lambda *a, resident=resident, **k: dataclasses.replace(
            real(*a, **k), resident_blocks=resident))
        monkeypatch.setattr(host_module(), "ready_transformer_for_sampling", lambda *a, **k: None)
        monkeypatch.setattr("wan_egoexo.sampling.sampler.sample_target", lambda *a, **k: context.source[:, :, :1] * 0)
        run(nodes, "WorldWanderSampler", model, context, text, **sampler_args(steps=1))
    assert released == [model.transformer]  # once: for the streamed plan, before it was set up
    assert set_up == [(0, None), (1, 0)]
