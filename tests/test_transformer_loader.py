"""load_transformer: every layout round-trips to identical outputs; wrong files fail by name, early."""

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

import wan_egoexo.models.transformer_loader as loader
from wan_egoexo.errors import ModelFileError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG, original_key, save_transformer_single_file

REAL_5B = dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
               out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30)


def _flow(model):
    g = torch.Generator().manual_seed(5)
    target, source = torch.randn(2, 1, 48, 2, 4, 4, generator=g)
    text = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return predict_flow(model, target, 700.0, text, source)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_single_file_round_trip(tmp_path, tiny_transformer, prefix):
    path = tmp_path / "wan2.2_ti2v_5B_fp16.safetensors"
    save_transformer_single_file(tiny_transformer, path, prefix=prefix)
    loaded = loader.load_transformer(path, device="cpu")
    assert torch.equal(_flow(loaded), _flow(tiny_transformer))
    for key, value in TINY_TRANSFORMER_CONFIG.items():
        assert tuple(loaded.config[key]) == value if isinstance(value, tuple) else loaded.config[key] == value, key


@pytest.mark.parametrize("subfolder", [True, False])
def test_diffusers_folder_round_trip(tmp_path, tiny_transformer, subfolder):
    tiny_transformer.save_pretrained(tmp_path / "transformer")
    loaded = loader.load_transformer(tmp_path if subfolder else tmp_path / "transformer", device="cpu")
    assert torch.equal(_flow(loaded), _flow(tiny_transformer))


def test_original_key_inverse_covers_real_5b_keys():
    with init_empty_weights():
        keys = list(WanTransformer3DModel(**REAL_5B).state_dict())
    assert len([k for k in keys if k.endswith("attn1.to_q.weight")]) == 30
    originals = {original_key(k): k for k in keys}
    # the spec's examples of the real file's names
    for name in ("blocks.0.self_attn.q.weight", "blocks.29.ffn.0.weight", "head.head.weight", "head.modulation",
                 "blocks.3.norm3.weight", "blocks.3.cross_attn.norm_k.weight", "time_projection.1.weight"):
        assert name in originals, name
    assert convert_wan_transformer_to_diffusers(dict(originals)) == {k: k for k in keys}


def test_real_5b_config_inferred_from_shapes():
    with init_empty_weights():
        model = WanTransformer3DModel(**REAL_5B)
    shapes = {original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    config = loader.infer_transformer_config("x", shapes)
    for key, value in REAL_5B.items():
        assert config[key] == value, key


def test_bf16_keeps_fp32_modules(tmp_path, tiny_transformer):
    path = tmp_path / "t.safetensors"
    save_transformer_single_file(tiny_transformer, path, dtype=torch.float16)
    model = loader.load_transformer(path, device="cpu", dtype="bf16")
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.blocks[0].scale_shift_table.dtype == torch.float32
    assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


def _never_load(*args, **kwargs):
    raise AssertionError("weights were read before the file was checked")


def _wan21_file(path):
    cfg = dict(TINY_TRANSFORMER_CONFIG, in_channels=16, out_channels=16)
    save_transformer_single_file(WanTransformer3DModel(**cfg), path)


def _i2v_file(path, tiny):
    save_transformer_single_file(tiny, path)
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    tensors["img_emb.proj.1.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, m: _wan21_file(p), "16-channel latents: it is a Wan2.1 or Wan2.2-14B"),
        (lambda p, m: _i2v_file(p, m), "image-to-video"),
        (lambda p, m: save_file({"decoder.conv1.weight": torch.zeros(2, 2)}, str(p)), "patch_embedding"),
        (lambda p, m: p.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 4), "not a safetensors"),
        (lambda p, m: (save_transformer_single_file(m, p), p.write_bytes(p.read_bytes()[:-1000])), "truncated"),
        (lambda p, m: None, "no such file"),
    ],
    ids=["wan21", "i2v", "vae", "not-safetensors", "truncated", "missing"],
)
def test_wrong_files_named_before_loading(tmp_path, tiny_transformer, monkeypatch, make, message):
    path = tmp_path / "model.safetensors"
    make(path, tiny_transformer)
    monkeypatch.setattr(loader, "load_from_files", _never_load)
    with pytest.raises(ModelFileError, match=message) as info:
        loader.load_transformer(path, device="cpu")
    assert str(path) in str(info.value)
    assert "Wan2.2-TI2V-5B" in str(info.value) or "no such file" in str(info.value)


def test_missing_tensor_is_named(tmp_path, tiny_transformer):
    path = tmp_path / "t.safetensors"
    save_transformer_single_file(tiny_transformer, path)
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    del tensors["blocks.1.ffn.2.bias"]
    save_file(tensors, str(path))
    with pytest.raises(ModelFileError, match="missing 1 tensors"):
        loader.load_transformer(path, device="cpu")


def _dequantized_by_hand(path, prefix, name, dtype):
    """The weight ComfyUI's scaled-fp8 ops use for parameter ``name``: weight.float() * scale_weight."""
    from safetensors.torch import load_file
    raw = load_file(str(path))
    key = prefix + original_key(name)
    scale = raw.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
    if scale is None:
        return raw[key].to(dtype)
    assert raw[key].dtype == torch.float8_e4m3fn and scale.shape == ()
    return (raw[key].to(torch.float32) * scale.item()).to(dtype)


@pytest.mark.parametrize("prefix, scale_input, dtype", [
    ("", False, "fp32"), ("model.diffusion_model.", True, "fp32"), ("model.diffusion_model.", False, "bf16")])
def test_fp8_scaled_file_is_dequantised(tmp_path, tiny_transformer, prefix, scale_input, dtype):
    from wan_egoexo.models.weight_source import read_original, weight_source
    from wan_egoexo.tiny.transformer import save_transformer_fp8_scaled
    path = tmp_path / "wan2.2_ti2v_5B_fp8_scaled.safetensors"
    save_transformer_fp8_scaled(tiny_transformer, path, prefix=prefix, with_scale_input=scale_input)
    loaded = loader.load_transformer(path, device="cpu", dtype=dtype)
    quantized = 0
    for name, param in loaded.state_dict().items():
        expected = _dequantized_by_hand(path, prefix, name, param.dtype)
        assert torch.equal(param, expected), name
        assert torch.equal(read_original(weight_source(loaded), name, param), param), name  # merged-LoRA restore
        quantized += name in weight_source(loaded).scales
    # every linear: per block q k v o twice and ffn 0, 2; the time and text embedders (4), time_projection, head
    assert quantized == 2 * 10 + 6
    flow, reference = _flow(loaded).float(), _flow(tiny_transformer)
    assert torch.isfinite(flow).all()
    assert (flow - reference).norm() / reference.norm() < 0.1  # fp8 rounding of the weights, not a wrong mapping


def test_fp8_scaled_bad_scale_is_named(tmp_path, tiny_transformer, monkeypatch):
    from safetensors.torch import load_file
    from wan_egoexo.tiny.transformer import save_transformer_fp8_scaled
    path = tmp_path / "t.safetensors"
    save_transformer_fp8_scaled(tiny_transformer, path)
    tensors = load_file(str(path))
    tensors["blocks.0.self_attn.q.scale_weight"] = torch.ones(3)
    tensors["blocks.0.not_a_layer.scale_weight"] = torch.ones(())
    save_file(tensors, str(path))
    monkeypatch.setattr(loader, "load_from_files", _never_load)
    with pytest.raises(ModelFileError, match="blocks.0.not_a_layer.scale_weight"):
        loader.load_transformer(path, device="cpu")
    del tensors["blocks.0.not_a_layer.scale_weight"]
    save_file(tensors, str(path))
    with pytest.raises(ModelFileError, match=r"blocks.0.self_attn.q.scale_weight.*one element"):
        loader.load_transformer(path, device="cpu")
