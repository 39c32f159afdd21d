"""Applying, stacking, re-weighting and removing LoRAs on the transformer, checked against an
independent merge (W + strength * alpha / rank * B @ A computed in float64 on a copy)."""

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import wan_egoexo.lora.adapters as adapters_module
from wan_egoexo.errors import InputError, ModelFileError
from wan_egoexo.lora import active_loras, apply_lora, remove_loras, set_lora_strength
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt


def run(model):
    gen = torch.Generator().manual_seed(11)
    latents = torch.randn(1, 48, 2, 8, 8, generator=gen)
    text = torch.randn(1, 8, 32, generator=gen)
    with torch.no_grad():
        return model(latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]


def merged_output(model, *loras):
    """Output of a copy whose weights get W += scale * B @ A for each (peft_state, scale)."""
    merged = copy.deepcopy(model)
    params = dict(merged.named_parameters())
    for state, scale in loras:
        for key, down in state.items():
            if ".lora_A." in key:
                module = key.split(".lora_A.")[0]
                up = state[key.replace(".lora_A.", ".lora_B.")]
                with torch.no_grad():
                    params[module + ".weight"] += (scale * (up.double() @ down.double())).float()
    return run(merged)


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(name, type(module)) for name, module in model.named_modules()],
            {name: p.requires_grad for name, p in model.named_parameters()},
            set(model.__dict__))


def assert_restored(model, before):
    state, tree, grads, attrs = before
    now = model.state_dict()
    assert set(now) == set(state)
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert [(name, type(module)) for name, module in model.named_modules()] == tree
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert set(model.__dict__) == attrs


def write_original_alpha(state, path, alpha):
    """original-Wan lora_down/up + alpha for the attn1/ffn modules of a PEFT-named LoRA."""
    names = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
             "attn1.to_out.0": "self_attn.o", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}
    out = {}
    for key, down in state.items():
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0]
            _, index, inner = module.split(".", 2)
            stem = f"diffusion_model.blocks.{index}.{names[inner]}"
            out[stem + ".lora_down.weight"] = down
            out[stem + ".lora_up.weight"] = state[key.replace(".lora_A.", ".lora_B.")]
            out[stem + ".alpha"] = torch.tensor(float(alpha))
    save_file(out, path)
    return path


@pytest.fixture
def two_loras(tmp_path, tiny_transformer):
    first = random_lora_state_dict(tiny_transformer, rank=4, seed=1)
    second = random_lora_state_dict(tiny_transformer, rank=2, seed=2,
                                    targets=("attn1.to_q", "attn1.to_v", "ffn.net.0.proj", "proj_out"))
    save_worldwander_ckpt(first, tmp_path / "first.ckpt")
    save_file({"transformer." + k: v for k, v in second.items()}, tmp_path / "second.safetensors")
    return first, second, tmp_path / "first.ckpt", tmp_path / "second.safetensors"


def test_strength_scales_the_delta(tiny_transformer, two_loras):
    first, _, first_path, _ = two_loras
    full, half = merged_output(tiny_transformer, (first, 1.0)), merged_output(tiny_transformer, (first, 0.5))
    assert (full - half).abs().max() > 1e-3
    name = apply_lora(tiny_transformer, first_path, strength=0.5)
    assert name == "first" and active_loras(tiny_transformer) == {"first": 0.5}
    assert_close(run(tiny_transformer), half)


def test_strength_equals_alpha_scaling(tmp_path, tiny_transformer):
    state = random_lora_state_dict(tiny_transformer, rank=4, seed=4, targets=("attn1.to_q", "ffn.net.2"))
    plain = write_original_alpha(state, tmp_path / "plain.safetensors", alpha=4.0)
    halved = write_original_alpha(state, tmp_path / "halved.safetensors", alpha=2.0)
    model_a, model_b = copy.deepcopy(tiny_transformer), copy.deepcopy(tiny_transformer)
    apply_lora(model_a, plain, strength=0.5)
    apply_lora(model_b, halved)
    assert_close(run(model_a), run(model_b))
    assert_close(run(model_b), merged_output(tiny_transformer, (state, 0.5)))


def test_stacked_loras_add_their_deltas_and_remove_cleanly(tiny_transformer, two_loras):
    first, second, first_path, second_path = two_loras
    pristine = copy.deepcopy(tiny_transformer)
    before = snapshot(tiny_transformer)
    base = run(tiny_transformer)
    a = apply_lora(tiny_transformer, first_path, strength=0.7)
    b = apply_lora(tiny_transformer, second_path, strength=-1.3)
    assert active_loras(tiny_transformer) == {a: 0.7, b: -1.3}
    assert_close(run(tiny_transformer), merged_output(pristine, (first, 0.7), (second, -1.3)))

    set_lora_strength(tiny_transformer, a, 0.25)
    assert active_loras(tiny_transformer) == {a: 0.25, b: -1.3}
    assert_close(run(tiny_transformer), merged_output(pristine, (first, 0.25), (second, -1.3)))

    set_lora_strength(tiny_transformer, b, 0.0)  # off, still applied
    assert active_loras(tiny_transformer) == {a: 0.25, b: 0.0}
    assert_close(run(tiny_transformer), merged_output(pristine, (first, 0.25)))

    remove_loras(tiny_transformer, a)  # proj_out (only the second LoRA) stays wrapped, the rest partly
    assert active_loras(tiny_transformer) == {b: 0.0}
    set_lora_strength(tiny_transformer, b, 1.0)
    assert_close(run(tiny_transformer), merged_output(pristine, (second, 1.0)))

    remove_loras(tiny_transformer)
    assert active_loras(tiny_transformer) == {}
    assert_restored(tiny_transformer, before)
    assert torch.equal(run(tiny_transformer), base)


def test_names_are_unique_and_checked(tiny_transformer, two_loras):
    _, _, first_path, _ = two_loras
    assert apply_lora(tiny_transformer, first_path) == "first"
    assert apply_lora(tiny_transformer, first_path) == "first_2"
    assert apply_lora(tiny_transformer, first_path, name="mine") == "mine"
    with pytest.raises(InputError, match="already applied"):
        apply_lora(tiny_transformer, first_path, name="mine")
    with pytest.raises(InputError, match="not a valid adapter name"):
        apply_lora(tiny_transformer, first_path, name="a.b")
    with pytest.raises(InputError, match="'nope'.*expected one of"):
        set_lora_strength(tiny_transformer, "nope", 1.0)
    with pytest.raises(InputError, match="finite"):
        set_lora_strength(tiny_transformer, "mine", float("nan"))
    with pytest.raises(InputError, match="'ghost'"):
        remove_loras(tiny_transformer, ["mine", "ghost"])
    assert set(active_loras(tiny_transformer)) == {"first", "first_2", "mine"}


def test_unmatched_keys_warn_by_name_and_the_rest_loads(tmp_path, tiny_transformer):
    state = random_lora_state_dict(tiny_transformer, rank=4, seed=6, targets=("attn2.to_k", "ffn.net.0.proj"))
    extra = {
        "blocks.7.attn1.to_q.lora_A.weight": torch.ones(4, 256),  # no block 7 in the tiny model
        "blocks.7.attn1.to_q.lora_B.weight": torch.ones(256, 4),
        "blocks.0.attn1.to_q.diff_b": torch.ones(256),  # not a LoRA tensor
    }
    path = tmp_path / "partial.safetensors"
    save_file({**state, **extra}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(tiny_transformer, path)
    text = " ".join(str(w.message) for w in caught)
    for key in extra:
        assert key in text
    assert str(path) in text
    out = run(tiny_transformer)
    remove_loras(tiny_transformer)
    assert_close(out, merged_output(tiny_transformer, (state, 1.0)))


def test_failure_while_adding_leaves_the_model_as_before(monkeypatch, tiny_transformer, two_loras):
    first, second, first_path, second_path = two_loras
    apply_lora(tiny_transformer, first_path, strength=0.5)
    before = snapshot(tiny_transformer)
    with_first = run(tiny_transformer)

    real = adapters_module.set_peft_model_state_dict

    def fail_after_loading(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(adapters_module, "set_peft_model_state_dict", fail_after_loading)
    with pytest.raises(RuntimeError, match="disk on fire"):
        apply_lora(tiny_transformer, second_path)
    assert active_loras(tiny_transformer) == {"first": 0.5}
    assert_restored(tiny_transformer, before)
    assert torch.equal(run(tiny_transformer), with_first)

    remove_loras(tiny_transformer)
    fresh = snapshot(tiny_transformer)
    with pytest.raises(RuntimeError, match="disk on fire"):
        apply_lora(tiny_transformer, first_path)
    assert_restored(tiny_transformer, fresh)
    assert not hasattr(tiny_transformer, "peft_config")


def test_lora_for_another_model_is_refused_untouched(tmp_path, tiny_transformer):
    path = tmp_path / "wan14b.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 512),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.ones(512, 4)}, path)
    before = snapshot(tiny_transformer)
    with pytest.raises(ModelFileError, match="different model") as info:
        apply_lora(tiny_transformer, path)
    assert str(path) in str(info.value)
    assert_restored(tiny_transformer, before)


def test_file_without_lora_tensors(tmp_path, tiny_transformer):
    path = tmp_path / "empty.safetensors"
    save_file({"something.weight": torch.ones(2)}, path)
    with pytest.raises(ModelFileError, match="no LoRA tensors") as info:
        apply_lora(tiny_transformer, path)
    assert str(path) in str(info.value)
    nothing_matches = tmp_path / "other.safetensors"
    save_file({"unet.down.lora_A.weight": torch.ones(2, 2), "unet.down.lora_B.weight": torch.ones(2, 2)},
              nothing_matches)
    with pytest.raises(ModelFileError, match="none of its 1 LoRA modules"):
        apply_lora(tiny_transformer, nothing_matches)


def test_mixed_ranks_and_alphas_per_module(tmp_path, tiny_transformer):
    low = random_lora_state_dict(tiny_transformer, rank=2, seed=7, targets=("attn1.to_q", "attn1.to_out.0"))
    high = random_lora_state_dict(tiny_transformer, rank=6, seed=8, targets=("ffn.net.2",))
    path_low = write_original_alpha(low, tmp_path / "low.safetensors", alpha=5.0)
    path_high = write_original_alpha(high, tmp_path / "high.safetensors", alpha=1.5)
    combined = {**load_file(path_low), **load_file(path_high)}
    save_file(combined, tmp_path / "mixed.safetensors")
    apply_lora(tiny_transformer, tmp_path / "mixed.safetensors", strength=0.8)
    out = run(tiny_transformer)
    remove_loras(tiny_transformer)
    assert_close(out, merged_output(tiny_transformer, (low, 0.8 * 5.0 / 2), (high, 0.8 * 1.5 / 6)))
