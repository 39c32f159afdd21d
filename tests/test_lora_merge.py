"""Merged LoRAs against unfused PEFT adapters, and the bit-exact restore of the base weights (from
the model file, or from the CPU copy of a model built in memory)."""

import os
import subprocess

import pytest
import torch

from wan_egoexo.errors import InputError, ModelFileError, NonFiniteError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.lora import (activate_loras, apply_lora, merge_loras, merged_loras, remove_loras,
                             restore_base_weights, set_merged_loras)
from wan_egoexo.lora.stack import adapter_name_for
from wan_egoexo.memory.offload import disable_block_offload, enable_block_offload
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt
from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file
from wan_egoexo.models.transformer_loader import load_transformer

from memory_helpers import memory_inputs, rel_error


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = build_tiny_transformer(0)
    model = root / "model.safetensors"
    save_transformer_single_file(base, model, dtype=torch.float16)  # as the released fp16 file
    a = save_worldwander_ckpt(random_lora_state_dict(base, rank=4, seed=1), root / "a.ckpt")
    b = save_worldwander_ckpt(random_lora_state_dict(base, rank=2, seed=2), root / "b.ckpt")
    return model, a, b


def _forward(model):
    with torch.no_grad():
        return predict_flow(model, *memory_inputs()).float()


def _state(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_merged_equals_unfused_within_rounding(files, dtype):
    path, a, b = files
    chain = [(a, 1.0), (b, 0.5)]
    unfused = load_transformer(path, "cpu", dtype)
    activate_loras(unfused, chain)
    merged = load_transformer(path, "cpu", dtype)
    set_merged_loras(merged, chain)
    assert not getattr(merged, "peft_config", None)  # a plain model: no adapter layers
    assert merged_loras(merged) == {adapter_name_for(a): 1.0, adapter_name_for(b): 0.5}
    reference = load_transformer(path, "cpu", "fp32")
    activate_loras(reference, chain)
    exact = _forward(reference)
    if dtype == "fp32":
        torch.testing.assert_close(_forward(merged), _forward(unfused), rtol=1e-5, atol=1e-5)
        return
    # bf16: each merged weight is the loaded weight + delta, rounded once to bf16 ...
    plain = load_transformer(path, "cpu", dtype)
    for name, weight in merged.named_parameters():
        layer = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and hasattr(reference.get_submodule(layer), "lora_A"):
            expected = plain.get_parameter(name).float() + _delta(reference, layer)
            assert ((weight.float() - expected).abs() <= expected.abs() * 2.0**-8).all(), name
    # ... so the forward is as close to the float32 one as the unfused bf16 forward is.
    assert rel_error(_forward(merged), exact) < 1.5 * rel_error(_forward(unfused), exact)


def _delta(reference, layer_name):
    """Sum of scale * B @ A over the adapters of an unfused PEFT layer, in float32."""
    layer = reference.get_submodule(layer_name)
    total = 0
    for adapter in layer.active_adapters:
        total = total + layer.scaling[adapter] * layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight
    return total


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_chain_changes_restore_the_base_weights_bit_for_bit_from_the_file(files, dtype):
    path, a, b = files
    model = load_transformer(path, "cpu", dtype)
    base = _state(model)
    chains = ([(a, 1.0)], [(a, 0.5)], [(a, 0.5), (b, 1.0)], [(a, 0.5), (b, 1.0)], [])
    outputs = []
    for chain, changes in zip(chains, (True, True, True, False, True)):
        assert set_merged_loras(model, chain) == changes  # an unchanged chain costs nothing
        state = model.__dict__.get("_wan_egoexo_merged_loras")
        assert state is None or state.backup == {}  # the model file is the backup: nothing kept in memory
        outputs.append(_forward(model))
    assert all(torch.equal(base[name], tensor) for name, tensor in model.state_dict().items())
    assert merged_loras(model) == {}
    # the same chain merged again gives the same weights as the first time
    set_merged_loras(model, [(a, 1.0)])
    assert torch.equal(_forward(model), outputs[0])


def test_a_model_without_a_file_keeps_a_cpu_copy_of_the_touched_weights(files):
    _, a, _ = files
    model = build_tiny_transformer(0)
    base = _state(model)
    merge_loras(model, [(a, 1.0)])
    backup = model.__dict__["_wan_egoexo_merged_loras"].backup
    assert len(backup) == 2 * 10  # the ten WorldWander linears of each of the two blocks
    restore_base_weights(model)
    assert all(torch.equal(base[name], tensor) for name, tensor in model.state_dict().items())


def test_a_changed_model_file_is_refused_by_name(files, tmp_path):
    path, a, _ = files
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(path.read_bytes())
    model = load_transformer(copy, "cpu", "fp32")
    merge_loras(model, [(a, 1.0)])
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ModelFileError, match="changed or disappeared since the transformer was loaded"):
        restore_base_weights(model)


def _swap(model_file, other, how):
    """Put ``other`` (the same size) in ``model_file``'s place, with ``model_file``'s mtime kept."""
    stat = model_file.stat()
    if how == "os.replace + utime":
        os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(other, model_file)
    elif how == "cp -p":
        os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        subprocess.run(["cp", "-p", str(other), str(model_file)], check=True)
    else:  # the same inode, rewritten in place; only the change time tells
        with open(model_file, "r+b") as handle:
            handle.write(other.read_bytes())
        os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = model_file.stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)  # the old stamp would pass


@pytest.mark.parametrize("how", ["os.replace + utime", "cp -p", "in place + utime"])
def test_a_same_size_model_file_put_in_place_with_its_mtime_is_refused_not_mixed(files, tmp_path, how):
    """Another tiny transformer of the same architecture (same size) replaces the file after loading:
    the restore refuses it by name before any weight is written, and keeps refusing."""
    _, a, _ = files
    model_file, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    save_transformer_single_file(build_tiny_transformer(0), model_file, dtype=torch.float16)
    save_transformer_single_file(build_tiny_transformer(1), other, dtype=torch.float16)
    model = load_transformer(model_file, "cpu", "fp32")
    merge_loras(model, [(a, 1.0)])
    merged = _state(model)
    _swap(model_file, other, how)
    with pytest.raises(ModelFileError, match="model.safetensors: changed or disappeared|model.safetensors: tensor "):
        restore_base_weights(model)
    assert all(torch.equal(merged[name], tensor) for name, tensor in model.state_dict().items())  # nothing mixed
    with pytest.raises(ModelFileError):
        set_merged_loras(model, [])


def test_the_content_check_alone_refuses_another_models_tensors(files, tmp_path, monkeypatch):
    """With the stamp fooled as well (a file system without change times), the sampled rows differ."""
    import wan_egoexo.models.weight_source as weight_source

    _, a, _ = files
    model_file, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    save_transformer_single_file(build_tiny_transformer(0), model_file, dtype=torch.float16)
    save_transformer_single_file(build_tiny_transformer(1), other, dtype=torch.float16)
    model = load_transformer(model_file, "cpu", "fp32")
    merge_loras(model, [(a, 1.0)])
    os.replace(other, model_file)
    monkeypatch.setattr(weight_source, "_check_stamp", lambda source, file: None)
    with pytest.raises(ModelFileError, match=r"tensor \S+ no longer holds the values loaded from it"):
        restore_base_weights(model)
    monkeypatch.undo()
    # the same bytes again (a copy of the original): the restore is bit for bit
    save_transformer_single_file(build_tiny_transformer(0), model_file, dtype=torch.float16)
    monkeypatch.setattr(weight_source, "_check_stamp", lambda source, file: None)
    restore_base_weights(model)
    fresh = load_transformer(model_file, "cpu", "fp32")
    assert all(torch.equal(fresh.state_dict()[name], tensor) for name, tensor in model.state_dict().items())


def test_merging_is_all_or_nothing_and_refuses_mixed_states(files, tmp_path):
    path, a, _ = files
    model = load_transformer(path, "cpu", "fp32")
    base = _state(model)
    wrong = build_tiny_transformer(0)
    state = random_lora_state_dict(wrong, rank=2, seed=3)
    state["blocks.1.attn1.to_q.lora_A.weight"] = torch.randn(2, 7)  # made for another model
    bad = save_worldwander_ckpt(state, tmp_path / "bad.ckpt")
    with pytest.raises(ModelFileError, match="different model"):
        merge_loras(model, [(a, 1.0), (bad, 1.0)])
    assert merged_loras(model) == {}
    assert all(torch.equal(base[name], tensor) for name, tensor in model.state_dict().items())
    merge_loras(model, [(a, 1.0)])
    with pytest.raises(InputError, match="already has merged LoRAs"):
        merge_loras(model, [(a, 1.0)])
    restore_base_weights(model)
    apply_lora(model, a)
    with pytest.raises(InputError, match="unfused LoRA adapters"):
        merge_loras(model, [(a, 1.0)])
    remove_loras(model)


def test_merged_chains_change_in_place_under_block_offload(files):
    path, a, b = files
    resident = load_transformer(path, "cpu", "fp32")
    offloaded = load_transformer(path, "cpu", "fp32")
    enable_block_offload(offloaded, "cpu", resident=0)
    for chain in ([(a, 1.0)], [(a, 0.5), (b, 1.0)], []):
        set_merged_loras(resident, chain)
        set_merged_loras(offloaded, chain)
        assert torch.equal(_forward(offloaded), _forward(resident))
    disable_block_offload(offloaded, "cpu")
    assert all(torch.equal(t, resident.state_dict()[n]) for n, t in offloaded.state_dict().items())


def test_a_merge_after_a_forward_that_raised_under_block_offload_takes_effect(files):
    path, a, _b = files
    resident = load_transformer(path, "cpu", "fp32")
    set_merged_loras(resident, [(a, 1.0)])
    offloaded = load_transformer(path, "cpu", "fp32")
    enable_block_offload(offloaded, "cpu", resident=0)

    def fail(_module, _args):
        raise RuntimeError("out of memory (simulated)")

    handle = offloaded.blocks[-1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="simulated"):
        _forward(offloaded)
    handle.remove()
    set_merged_loras(offloaded, [(a, 1.0)])  # the next run's chain, merged before it samples
    assert torch.equal(_forward(offloaded), _forward(resident))


def test_a_nan_lora_or_an_overflowing_merge_changes_no_weight(files, tmp_path):
    model_file, a, _b = files
    model = load_transformer(model_file, dtype="fp16")
    before = _state(model)
    state = random_lora_state_dict(build_tiny_transformer(0), rank=4, seed=3)
    state[next(iter(state))][0, 0] = float("nan")
    bad = save_worldwander_ckpt(state, tmp_path / "nan.ckpt")
    with pytest.raises(NonFiniteError, match=r"the LoRA .*nan\.ckpt has NaN/Inf weights .*nothing was merged"):
        merge_loras(model, [(a, 1.0), (bad, 1.0)])
    # fp16 weights end at 65504: a finite LoRA of large values overflows them (in every layer it touches)
    large = save_worldwander_ckpt({k: torch.full_like(v, 1000.0) for k, v in state.items()}, tmp_path / "large.ckpt")
    with pytest.raises(NonFiniteError, match=r"overflows the torch.float16 weights to Inf; lower the strength"):
        merge_loras(model, [(a, 1.0), (large, 2.0)])
    assert merged_loras(model) == {}
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_merged_lora_on_an_fp8_scaled_file_restores_the_dequantised_weights(files, tmp_path):
    from wan_egoexo.tiny.transformer import save_transformer_fp8_scaled  # noqa: PLC0415

    _, a, _ = files
    path = tmp_path / "wan2.2_ti2v_5B_fp8_scaled.safetensors"
    save_transformer_fp8_scaled(build_tiny_transformer(0), path, prefix="model.diffusion_model.")
    model = load_transformer(path, "cpu", "bf16")
    before, flow = _state(model), _forward(model)
    set_merged_loras(model, [(a, 1.0)])
    assert rel_error(_forward(model), flow) > 1e-3  # the LoRA is in
    restore_base_weights(model)  # re-read from the fp8 file and dequantised as the loader did
    after = _state(model)
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert torch.equal(_forward(model), flow)
