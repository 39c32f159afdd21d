"""diffusers' lora_adapter_metadata read as data: pattern keys give the alphas PEFT itself gives
(its own matcher and its own injected layers are the reference), regular expressions are refused
without being evaluated, and every bad value is a ModelFileError naming the file, the field and
the rule."""

import itertools
import json

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.utils.other import get_pattern_key

from benchmarks import hostile_lora_files as hostile
from lora_files import split_peft
from wan_egoexo.errors import ModelFileError
from wan_egoexo.lora import read_lora_file
from wan_egoexo.lora.adapter_metadata import parse_adapter_metadata
from wan_egoexo.lora.layouts import check_lora_file
from wan_egoexo.tiny.lora import random_lora_state_dict

MODULES = ["blocks.0.attn1.to_q", "blocks.1.attn1.to_q", "blocks.0.attn2.to_q", "blocks.1.ffn.net.2", "proj_out",
           "blocks.0.attn1.to_out.0", "condition_embedder.time_proj"]
KEYS = ["attn1.to_q", "to_q", "0.attn1.to_q", "blocks.1.attn1.to_q", "^blocks.1.ffn.net.2", "net.2", "o_q",
        "blocks\\.0\\.attn1\\.to_out\\.0", "to_out.0", "proj_out", "^attn1.to_q", "time_proj", "out"]


def _peft_alpha(alpha_pattern: dict, lora_alpha: float, module: str) -> float:
    """The alpha PEFT's LoRA model gives ``module`` (peft.tuners.lora.model: get_pattern_key, then
    alpha_pattern.get(key, lora_alpha))."""
    return alpha_pattern.get(get_pattern_key(list(alpha_pattern), module), lora_alpha)


@pytest.mark.parametrize("start", range(0, len(KEYS), 3))
def test_module_name_keys_give_the_alpha_peft_gives(start):
    """Every module against key sets of one to three keys, in both orders (the first match wins)."""
    for count in (1, 2, 3):
        for keys in itertools.permutations(KEYS[start:start + 4], count):
            pattern = {key: 10.0 + i for i, key in enumerate(keys)}
            metadata = parse_adapter_metadata("x.safetensors", json.dumps({"lora_alpha": 4, "alpha_pattern": pattern}))
            for module in MODULES:
                assert metadata.alpha_for(module, 2) == _peft_alpha(pattern, 4.0, module), (keys, module)


def test_rslora_scales_alpha_by_the_square_root_of_the_rank():
    metadata = parse_adapter_metadata("x.safetensors", json.dumps({"lora_alpha": 4, "use_rslora": True}))
    assert metadata.alpha_for("blocks.0.attn1.to_q", 16) == 16.0  # scale alpha / sqrt(r) == (alpha sqrt(r)) / r


def test_a_peft_saved_adapter_with_patterns_keeps_the_alphas_peft_uses(tmp_path, tiny_transformer):
    """PEFT's own config and injection (its layers' scaling) against what the saved file reads back as."""
    state = random_lora_state_dict(tiny_transformer, rank=4, seed=5)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=sorted(split_peft(state)),
                        rank_pattern={}, alpha_pattern={"attn1.to_q": 2, "^blocks.1.ffn.net.2": 12, "to_k": 5})
    inject_adapter_in_model(config, tiny_transformer, adapter_name="default")
    set_peft_model_state_dict(tiny_transformer, state, adapter_name="default")
    tiny_transformer._hf_peft_config_loaded = True
    tiny_transformer.save_lora_adapter(tmp_path, adapter_name="default")
    path = tmp_path / "pytorch_lora_weights.safetensors"
    layers = dict(tiny_transformer.named_modules())
    for reader in (read_lora_file, check_lora_file):
        modules = reader(path).modules
        assert set(modules) == set(split_peft(state))
        for name, module in modules.items():
            assert module.alpha == layers[name].scaling["default"] * 4, name
    assert {m.alpha for m in read_lora_file(path).modules.values()} == {2.0, 12.0, 5.0, 8.0}


@pytest.mark.parametrize("key", [hostile.REDOS_PATTERN, "(a|aa)*$", "blocks.*.to_q", "to_[qk]", "(", "a{1,99}",
                                 "x" * 300, "blocks.0..to_q", ".to_q"])
def test_regular_expressions_are_refused_without_being_evaluated(tmp_path, key):
    path = hostile.redos_alpha_pattern_safetensors(tmp_path / "re.safetensors", key)
    for reader in (read_lora_file, check_lora_file):
        with pytest.raises(ModelFileError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith(f"{path}: lora_adapter_metadata: alpha_pattern has ") and (
            "regular expressions are not evaluated" in message or "module names of at most 256 characters" in message)


@pytest.mark.parametrize("name", sorted(hostile.BAD_METADATA))
def test_every_bad_metadata_value_is_named(tmp_path, name):
    path = hostile.bad_metadata_safetensors(tmp_path / "md.safetensors", name)
    fragment = hostile.BAD_METADATA[name][1]
    for reader in (read_lora_file, check_lora_file):
        with pytest.raises(ModelFileError) as info:
            reader(path)
        message = str(info.value)
        assert message.startswith(f"{path}: lora_adapter_metadata: ") and fragment in message and "Expected" in message


@pytest.mark.parametrize("raw, fragment", [
    ("{", "is not JSON"), ("[1]", "a JSON object"), ('{"lora_alpha": 1' + "0" * 4000 + "}", "lora_alpha is 1000"),
    ('{"lora_alpha": 1' + "0" * 4400 + "}", "is not JSON"), ("[" * 100_000, "is not JSON"),
])
def test_metadata_that_is_not_a_config_is_named(tmp_path, raw, fragment):
    path = hostile.metadata_lora_safetensors(tmp_path / "raw.safetensors", None, raw=raw)
    with pytest.raises(ModelFileError, match="lora_adapter_metadata") as info:
        read_lora_file(path)
    assert fragment in str(info.value), info.value


def test_a_valid_metadata_alpha_reaches_the_module(tmp_path):
    path = hostile.metadata_lora_safetensors(tmp_path / "ok.safetensors",
                                             {"r": 1, "lora_alpha": 3, "alpha_pattern": {"to_q": 0.5},
                                              "rank_pattern": {"to_q": 1}, "target_modules": ["to_q"]})
    module = read_lora_file(path).modules[hostile.MODULE]
    assert module.alpha == 0.5 and torch.equal(module.down, torch.tensor([[0.5]]))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_alpha_tensor_is_named(tmp_path, value):
    from safetensors.torch import save_file

    path = tmp_path / "alpha.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(1, 1),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(1, 1),
               "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(value)}, str(path))
    for reader in (read_lora_file, check_lora_file):
        with pytest.raises(ModelFileError, match=r"self_attn\.q\.alpha is (nan|inf)\. Expected a finite alpha"):
            reader(path)
