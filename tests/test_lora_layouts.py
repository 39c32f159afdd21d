"""Every LoRA layout gives the transformer output that the same LoRA gives when PEFT applies it
directly; conversion writes a file diffusers (and ComfyUI's rules) load to the same output."""

import copy
import warnings

import pytest
import torch
from diffusers import WanPipeline
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from wan_egoexo.errors import InputError, ModelFileError
from wan_egoexo.lora import apply_lora, convert_lora_file, normalize_lora_state_dict, read_lora_file
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt

from lora_files import original_name, split_peft, write_kohya, write_original, write_peft

RANK = 4


def run(model):
    gen = torch.Generator().manual_seed(11)
    latents = torch.randn(1, 48, 2, 8, 8, generator=gen)
    text = torch.randn(1, 8, 32, generator=gen)
    with torch.no_grad():
        return model(latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]


def peft_reference(model, state, alpha):
    """The LoRA applied by PEFT itself on a copy of the model."""
    ref = copy.deepcopy(model)
    config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=sorted(split_peft(state)))
    inject_adapter_in_model(config, ref, adapter_name="ref")
    result = set_peft_model_state_dict(ref, state, adapter_name="ref")
    assert not result.unexpected_keys
    return run(ref)


def ours(model, path):
    copy_ = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file must load without any warning
        apply_lora(copy_, path)
    return run(copy_)


def assert_same(actual, expected, base):
    assert (expected - base).abs().max() > 1e-2, "the LoRA must change the output for this test to mean anything"
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)


@pytest.fixture
def lora_state(tiny_transformer):
    return random_lora_state_dict(tiny_transformer, rank=RANK, seed=5)


def test_test_names_are_the_real_original_wan_names(tiny_transformer, lora_state):
    # diffusers' single-file converter (original Wan -> diffusers) must map every name back.
    fake_checkpoint = {original_name(m) + ".weight": torch.zeros(1) for m in split_peft(lora_state)}
    converted = convert_wan_transformer_to_diffusers(dict(fake_checkpoint))
    assert set(converted) == {m + ".weight" for m in split_peft(lora_state)}


@pytest.mark.parametrize("layout", ["ckpt", "peft", "peft_prefixed", "peft_default", "original_ab",
                                    "original_down_up_alpha", "kohya_alpha"])
def test_every_layout_matches_peft_applied_directly(tmp_path, tiny_transformer, lora_state, layout):
    alpha = RANK
    if layout == "ckpt":
        path = save_worldwander_ckpt(lora_state, tmp_path / "wan2-2_lora_one2three_realworld.ckpt")
    elif layout == "peft":
        path = write_peft(lora_state, tmp_path / "l.safetensors")
    elif layout == "peft_prefixed":
        path = write_peft(lora_state, tmp_path / "l.safetensors", prefix="transformer.")
    elif layout == "peft_default":
        path = write_peft(lora_state, tmp_path / "l.safetensors", prefix="transformer.", adapter="default.")
    elif layout == "original_ab":
        path = write_original(lora_state, tmp_path / "l.safetensors")
    elif layout == "original_down_up_alpha":
        alpha = 2 * RANK + 1
        path = write_original(lora_state, tmp_path / "l.safetensors", alpha=alpha, down_up=True)
    else:
        alpha = RANK / 2
        path = write_kohya(lora_state, tmp_path / "l.safetensors", alpha=alpha)
    base = run(tiny_transformer)
    assert_same(ours(tiny_transformer, path), peft_reference(tiny_transformer, lora_state, alpha), base)


@pytest.mark.parametrize("layout", ["original_down_up_alpha", "kohya_alpha"])
def test_non_diffusers_layouts_agree_with_diffusers_own_converters(tmp_path, tiny_transformer, lora_state, layout):
    path = tmp_path / "l.safetensors"
    if layout == "kohya_alpha":
        write_kohya(lora_state, path, alpha=3.0)
    else:
        write_original(lora_state, path, alpha=7.0, down_up=True)
    theirs = copy.deepcopy(tiny_transformer)
    theirs.load_lora_adapter(WanPipeline.lora_state_dict(str(path)), prefix="transformer", adapter_name="d")
    assert_same(ours(tiny_transformer, path), run(theirs), run(tiny_transformer))


def test_diffusers_saved_adapter_keeps_its_alpha_from_metadata(tmp_path, tiny_transformer, lora_state):
    saved = copy.deepcopy(tiny_transformer)
    config = LoraConfig(r=RANK, lora_alpha=3 * RANK, target_modules=sorted(split_peft(lora_state)))
    inject_adapter_in_model(config, saved, adapter_name="default")
    set_peft_model_state_dict(saved, lora_state, adapter_name="default")
    saved._hf_peft_config_loaded = True
    saved.save_lora_adapter(tmp_path, adapter_name="default")
    path = tmp_path / "pytorch_lora_weights.safetensors"
    assert {m.alpha for m in read_lora_file(path).modules.values()} == {3.0 * RANK}
    assert_same(ours(tiny_transformer, path), peft_reference(tiny_transformer, lora_state, 3 * RANK),
                run(tiny_transformer))


def test_normalized_modules_hold_the_file_tensors(tiny_transformer, lora_state):
    state = {f"lora_unet_{original_name(m).replace('.', '_')}.{half}.weight": t
             for m, (a, b) in split_peft(lora_state).items() for half, t in (("lora_down", a), ("lora_up", b))}
    state["lora_unet_blocks_0_self_attn_q.alpha"] = torch.tensor(1.5)
    weights = normalize_lora_state_dict(state, "k.safetensors")
    assert weights.layout == "kohya" and weights.unrecognized == []
    assert set(weights.modules) == set(split_peft(lora_state))
    for module, (a, b) in split_peft(lora_state).items():
        assert torch.equal(weights.modules[module].down, a) and torch.equal(weights.modules[module].up, b)
    assert weights.modules["blocks.0.attn1.to_q"].alpha == 1.5
    assert weights.modules["blocks.0.attn1.to_k"].alpha is None


def test_uninterpretable_keys_are_listed(lora_state):
    state = dict(lora_state)
    junk = ["blocks.0.attn1.to_q.diff_b", "blocks.0.norm2.lora_A.weight", "blocks.0.attn1.dora_scale",
            "lora_unet_blocks_0_mystery.lora_down.weight", "blocks.0.attn1.to_q.lora_A.other.weight"]
    for key in junk:
        state[key] = torch.ones(4, 4)
    weights = normalize_lora_state_dict(state, "x.safetensors")
    assert sorted(weights.unrecognized) == sorted(junk)
    assert len(weights.modules) == len(split_peft(lora_state))


def test_files_without_lora_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelFileError, match="no LoRA tensors") as info:
        read_lora_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelFileError, match="rank") as info:
        normalize_lora_state_dict({"a.lora_A.weight": torch.ones(4, 8), "a.lora_B.weight": torch.ones(8, 2)}, "bad.pt")
    assert "bad.pt" in str(info.value)


# --- conversion ---------------------------------------------------------------------------------

def comfy_rule_output(model, path):
    """What ComfyUI's loader computes: W += alpha / rank * up @ down for model weight
    diffusion_model.<module>.weight, with alpha = rank when absent (comfy/weight_adapter/lora.py)."""
    with safe_open(str(path), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    merged = copy.deepcopy(model)
    params = dict(merged.named_parameters())
    stems = {k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight")}
    for stem in stems:
        assert stem.startswith("diffusion_model.")
        down, up = tensors[stem + ".lora_down.weight"], tensors[stem + ".lora_up.weight"]
        alpha = tensors[stem + ".alpha"].item() if stem + ".alpha" in tensors else down.shape[0]
        (target,) = convert_wan_transformer_to_diffusers({stem[len("diffusion_model."):] + ".weight": 0})
        with torch.no_grad():
            params[target] += (alpha / down.shape[0]) * (up.double() @ down.double()).float()
    assert set(tensors) <= {s + suffix for s in stems for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha")}
    return run(merged)


@pytest.mark.parametrize("source", ["ckpt", "original_alpha_with_head"])
def test_converted_file_loads_in_diffusers_and_by_comfy_rules(tmp_path, tiny_transformer, source):
    state = random_lora_state_dict(tiny_transformer, rank=RANK, seed=9,
                                   targets=("attn1.to_q", "attn2.to_out.0", "ffn.net.2", "proj_out")
                                   if source != "ckpt" else "worldwander")
    if source == "ckpt":
        src = save_worldwander_ckpt(state, tmp_path / "ww.ckpt")
    else:
        src = write_original(state, tmp_path / "orig.safetensors", alpha=2.5, down_up=True)
    dst = convert_lora_file(src, tmp_path / "out.safetensors")
    assert dst == tmp_path / "out.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "out.safetensors"])  # no temp left
    with safe_open(str(dst), "pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
    assert "lora_down" in metadata["wan_egoexo.layout"] and metadata["wan_egoexo.converted_from"] == src.name
    assert all(k.startswith("diffusion_model.") for k in keys)

    expected = ours(tiny_transformer, src)
    base = run(tiny_transformer)
    theirs = copy.deepcopy(tiny_transformer)
    theirs.load_lora_adapter(WanPipeline.lora_state_dict(str(dst)), prefix="transformer", adapter_name="d")
    assert_same(run(theirs), expected, base)
    assert_same(comfy_rule_output(tiny_transformer, dst), expected, base)
    assert_same(ours(tiny_transformer, dst), expected, base)


def test_convert_refuses_a_non_safetensors_output(tmp_path, tiny_transformer, lora_state):
    src = save_worldwander_ckpt(lora_state, tmp_path / "ww.ckpt")
    with pytest.raises(InputError, match="safetensors"):
        convert_lora_file(src, tmp_path / "out.ckpt")


def test_convert_warns_about_keys_it_leaves_out(tmp_path, lora_state):
    state = {"transformer." + k: v for k, v in lora_state.items()}
    state["transformer.blocks.0.norm2.lora_A.weight"] = torch.ones(RANK, 256)
    state["transformer.blocks.0.norm2.lora_B.weight"] = torch.ones(256, RANK)
    src = tmp_path / "src.safetensors"
    save_file(state, src)
    with pytest.warns(UserWarning, match="blocks.0.norm2.lora_A.weight"):
        dst = convert_lora_file(src, tmp_path / "out.safetensors")
    with safe_open(str(dst), "pt") as handle:
        keys = set(handle.keys())
    assert keys == {f"diffusion_model.{original_name(m)}.{half}.weight"
                    for m in split_peft(lora_state) for half in ("lora_down", "lora_up")}


@pytest.mark.parametrize("layout", ["peft", "original", "kohya", "ckpt"])
def test_the_preflight_check_describes_the_modules_the_read_gives(tmp_path, lora_state, layout):
    """check_lora_file reads no tensor data, yet finds the same modules, ranks, shapes, alphas and
    unusable keys as read_lora_file."""
    from wan_egoexo.lora.layouts import check_lora_file

    state = dict(lora_state)
    path = tmp_path / f"{layout}.safetensors"
    if layout == "peft":
        write_peft(state, path, prefix="transformer.")
    elif layout == "original":
        write_original(state, path, alpha=3.0, down_up=True)
    elif layout == "kohya":
        write_kohya(state, path, alpha=5.0)
    else:
        path = save_worldwander_ckpt(state, tmp_path / "w.ckpt")
    read, checked = read_lora_file(path), check_lora_file(path)
    assert (checked.layout, checked.unrecognized) == (read.layout, read.unrecognized)
    assert set(checked.modules) == set(read.modules) and read.modules
    for name, module in read.modules.items():
        other = checked.modules[name]
        assert other.down.device.type == "meta" and other.down.shape == module.down.shape
        assert other.up.shape == module.up.shape and other.alpha == module.alpha
