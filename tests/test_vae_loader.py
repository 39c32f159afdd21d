"""The Wan2.2 VAE loader: original single-file layout and Diffusers folders, config inference from
shapes, the key mapping both ways, and the named errors for wrong files."""

import inspect
import json
import struct

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import load_file, save_file

import wan_egoexo.models.vae_loader as vae_loader
from wan_egoexo.errors import ModelFileError
from wan_egoexo.tiny.vae import build_tiny_vae, save_vae_single_file, tiny_vae_config
from wan_egoexo.models.vae_keys import diffusers_to_original, original_to_diffusers
from wan_egoexo.models.vae_loader import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, load_vae, read_vae_file

REAL_WAN22_VAE_CONFIG = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0, is_residual=True, in_channels=12, out_channels=12,
    patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
    latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
)
VAE_ARGUMENTS = set(inspect.signature(AutoencoderKLWan.__init__).parameters) - {"self"}


def meta_shapes(model_class, **config) -> dict:
    with torch.device("meta"):
        model = model_class(**config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def write_header_only(path, shapes: dict, dtype: str = "BF16") -> None:
    """A valid safetensors file with the given names and shapes whose data is a sparse hole of zeros:
    the size of a real-size model on paper, nothing on disk."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)


def as_original(shapes: dict, num_res_blocks: int) -> dict:
    mapping, unknown = diffusers_to_original(shapes, num_res_blocks)
    assert not unknown
    return {mapping[key]: shape for key, shape in shapes.items()}


@pytest.fixture(scope="module")
def tiny_vae():
    return build_tiny_vae(seed=1)


@pytest.fixture(scope="module")
def video():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 5, 32, 32, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def source_outputs(tiny_vae, video):
    """The source model's posterior mode and decoded video, computed once."""
    with torch.no_grad():
        z = tiny_vae.encode(video).latent_dist.mode()
        return z, tiny_vae.decode(z).sample


def assert_same_model(loaded, source, video, source_outputs):
    assert {k: loaded.config[k] for k in VAE_ARGUMENTS} == {k: source.config[k] for k in VAE_ARGUMENTS}
    z_source, decoded_source = source_outputs
    with torch.no_grad():
        assert torch.equal(loaded.encode(video).latent_dist.mode(), z_source)
        assert torch.equal(loaded.decode(z_source).sample, decoded_source)


def test_original_single_file_loads_to_the_same_model(tmp_path, tiny_vae, video, source_outputs):
    path = tmp_path / "wan2.2_vae.safetensors"
    save_vae_single_file(tiny_vae, path)
    loaded = load_vae(path, device="cpu")
    assert isinstance(loaded, AutoencoderKLWan) and not loaded.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.parameters())
    assert_same_model(loaded, tiny_vae, video, source_outputs)


def test_diffusers_folder_and_pipeline_root_load_to_the_same_model(tmp_path, tiny_vae, video, source_outputs):
    tiny_vae.save_pretrained(tmp_path / "pipeline" / "vae")
    for path in (tmp_path / "pipeline", tmp_path / "pipeline" / "vae"):
        assert_same_model(load_vae(path, device="cpu"), tiny_vae, video, source_outputs)


def test_diffusers_folder_takes_latent_stats_from_its_config(tmp_path, tiny_vae):
    folder = tmp_path / "vae"
    tiny_vae.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["latents_mean"] = [0.01 * c for c in range(48)]
    config["latents_std"] = [1.0 + 0.02 * c for c in range(48)]
    (folder / "config.json").write_text(json.dumps(config))
    loaded_config, _ = read_vae_file(folder)
    assert loaded_config["latents_mean"] == config["latents_mean"]
    assert loaded_config["latents_std"] == config["latents_std"]


def test_single_file_gets_the_released_stats_and_requested_dtype(tmp_path, tiny_vae):
    path = tmp_path / "vae.safetensors"
    save_vae_single_file(tiny_vae, path)
    loaded = load_vae(path, device="cpu", dtype="bf16")
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert list(loaded.config.latents_mean) == WAN22_LATENTS_MEAN and len(WAN22_LATENTS_MEAN) == 48
    assert list(loaded.config.latents_std) == WAN22_LATENTS_STD and len(WAN22_LATENTS_STD) == 48


def test_prefixed_single_file_loads(tmp_path, tiny_vae, video, source_outputs):
    plain, prefixed = tmp_path / "plain.safetensors", tmp_path / "prefixed.safetensors"
    save_vae_single_file(tiny_vae, plain)
    save_file({"first_stage_model." + k: v for k, v in load_file(plain).items()}, prefixed)
    assert_same_model(load_vae(prefixed, device="cpu"), tiny_vae, video, source_outputs)


@pytest.mark.parametrize("num_res_blocks", [1, 2, 3])
def test_mapping_covers_every_key_both_ways(num_res_blocks):
    config = dict(REAL_WAN22_VAE_CONFIG, base_dim=8, decoder_base_dim=8, num_res_blocks=num_res_blocks)
    diffusers_keys = list(meta_shapes(AutoencoderKLWan, **config))
    to_original, unknown = diffusers_to_original(diffusers_keys, num_res_blocks)
    assert not unknown and len(set(to_original.values())) == len(diffusers_keys)
    back, unknown = original_to_diffusers(to_original.values())
    assert not unknown
    assert {back[original]: original for original in back} == to_original


def test_real_size_key_set_maps_completely_to_the_comfyui_names():
    shapes = meta_shapes(AutoencoderKLWan, **REAL_WAN22_VAE_CONFIG)
    original = as_original(shapes, 2)
    assert len(original) == len(shapes) == 196
    # Names of comfy/ldm/wan/vae2_2.py WanVAE (Down_ResidualBlock: 2 residual blocks then the resample;
    # Up_ResidualBlock: 3 then the resample), with the shapes that module gives them.
    assert original["decoder.upsamples.0.upsamples.0.residual.2.weight"] == (1024, 1024, 3, 3, 3)
    assert original["encoder.downsamples.1.downsamples.2.time_conv.weight"] == (320, 320, 3, 1, 1)
    assert original["encoder.downsamples.0.downsamples.2.resample.1.weight"] == (160, 160, 3, 3)
    assert original["decoder.upsamples.0.upsamples.3.time_conv.weight"] == (2048, 1024, 3, 1, 1)
    assert original["decoder.upsamples.2.upsamples.3.resample.1.weight"] == (512, 512, 3, 3)
    assert original["decoder.upsamples.2.upsamples.0.shortcut.weight"] == (512, 1024, 1, 1, 1)
    assert original["encoder.head.2.weight"] == (96, 640, 3, 3, 3)
    assert original["encoder.middle.1.to_qkv.weight"] == (1920, 640, 1, 1)
    assert original["conv1.weight"] == (96, 96, 1, 1, 1) and original["conv2.weight"] == (48, 48, 1, 1, 1)
    assert original["decoder.head.2.weight"] == (12, 256, 3, 3, 3)
    # ResidualBlock = Sequential(RMS_norm(in), SiLU, conv(in->out), RMS_norm(out), SiLU, Dropout, conv(out->out)):
    # in a block that narrows 1024 -> 512 each position has its own shape.
    block = "decoder.upsamples.2.upsamples.0."
    assert original[block + "residual.0.gamma"] == (1024, 1, 1, 1)
    assert original[block + "residual.2.weight"] == (512, 1024, 3, 3, 3)
    assert original[block + "residual.3.gamma"] == (512, 1, 1, 1)
    assert original[block + "residual.6.weight"] == (512, 512, 3, 3, 3)


@pytest.mark.parametrize("original, diffusers", [
    # Module order of comfy/ldm/wan/vae2_2.py (middle = residual, attention, residual) against
    # diffusers' WanMidBlock (resnets[0], attentions[0], resnets[1]).
    ("encoder.middle.0.residual.0.gamma", "encoder.mid_block.resnets.0.norm1.gamma"),
    ("decoder.middle.2.residual.6.weight", "decoder.mid_block.resnets.1.conv2.weight"),
    ("decoder.middle.1.to_qkv.bias", "decoder.mid_block.attentions.0.to_qkv.bias"),
    ("encoder.conv1.weight", "encoder.conv_in.weight"),
    ("decoder.conv1.bias", "decoder.conv_in.bias"),
    ("encoder.head.0.gamma", "encoder.norm_out.gamma"),
    ("encoder.downsamples.3.downsamples.1.residual.3.gamma", "encoder.down_blocks.3.resnets.1.norm2.gamma"),
    ("decoder.upsamples.1.upsamples.2.residual.2.bias", "decoder.up_blocks.1.resnets.2.conv1.bias"),
])
def test_known_name_pairs(original, diffusers):
    assert original_to_diffusers([original])[0] == {original: diffusers}
    assert diffusers_to_original([diffusers], 2)[0] == {diffusers: original}


@pytest.mark.parametrize("config", [
    REAL_WAN22_VAE_CONFIG,
    dict(tiny_vae_config()),
    dict(REAL_WAN22_VAE_CONFIG, base_dim=8, decoder_base_dim=12, dim_mult=[1, 2, 2], num_res_blocks=3,
         temperal_downsample=[True, False], scale_factor_temporal=2, scale_factor_spatial=8),
], ids=["real", "tiny", "other"])
def test_inferred_config_equals_source_config(tmp_path, config):
    path = tmp_path / "vae.safetensors"
    write_header_only(path, as_original(meta_shapes(AutoencoderKLWan, **config), config["num_res_blocks"]))
    inferred, sources = read_vae_file(path)
    assert set(inferred) == VAE_ARGUMENTS
    assert inferred == {key: config[key] for key in VAE_ARGUMENTS}
    assert len(sources) == len(meta_shapes(AutoencoderKLWan, **config))


# ----------------------------------------------------------------------------------------- errors

def expect_file_error(path, *fragments):
    with pytest.raises(ModelFileError) as caught:
        load_vae(path, device="cpu")
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def no_weight_reads(monkeypatch):
    """Wrong files must be refused from their header alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read before the file was checked")
    monkeypatch.setattr(vae_loader, "load_from_files", refuse)


def test_wan21_vae_single_file_is_named(tmp_path, no_weight_reads):
    path = tmp_path / "wan_2.1_vae.safetensors"
    write_header_only(path, {"encoder.conv1.weight": (96, 3, 3, 3, 3), "encoder.downsamples.0.residual.0.gamma": (96, 1, 1, 1),
                             "decoder.middle.0.residual.0.gamma": (384, 1, 1, 1),
                             "decoder.upsamples.0.residual.0.gamma": (384, 1, 1, 1), "conv1.weight": (32, 32, 1, 1, 1)})
    expect_file_error(path, "Wan2.1 VAE", "16 latent channels", "wan2.2_vae.safetensors")


def test_wan21_vae_diffusers_folder_is_named(tmp_path, no_weight_reads):
    folder = tmp_path / "vae"
    folder.mkdir()
    write_header_only(folder / "diffusion_pytorch_model.safetensors", meta_shapes(AutoencoderKLWan, base_dim=8))
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", "z_dim": 16}))
    expect_file_error(folder, "Wan2.1 VAE", "wan2.2_vae.safetensors")


@pytest.mark.parametrize("shapes", [
    {"encoder.conv_in.weight": (128, 3, 3, 3), "encoder.down.0.block.0.norm1.weight": (128,),
     "decoder.up.0.block.0.conv1.weight": (128, 128, 3, 3), "quant_conv.weight": (8, 8, 1, 1)},
    meta_shapes(AutoencoderKL, block_out_channels=(8,), norm_num_groups=4),
], ids=["ldm-names", "diffusers-names"])
def test_image_vae_is_named(tmp_path, shapes, no_weight_reads):
    path = tmp_path / "sdxl_vae.safetensors"
    write_header_only(path, shapes)
    expect_file_error(path, "image VAE", "Stable Diffusion", "wan2.2_vae.safetensors")


@pytest.mark.parametrize("shapes", [
    {"patch_embedding.weight": (3072, 48, 1, 2, 2), "blocks.0.self_attn.q.weight": (3072, 3072), "head.modulation": (1, 2, 3072)},
    {"model.diffusion_model." + k: v for k, v in
     {"patch_embedding.weight": (3072, 48, 1, 2, 2), "blocks.0.self_attn.q.weight": (3072, 3072)}.items()},
    meta_shapes(WanTransformer3DModel, num_attention_heads=1, attention_head_dim=16, in_channels=4, out_channels=4,
                text_dim=8, freq_dim=8, ffn_dim=8, num_layers=1),
], ids=["original", "comfy-prefixed", "diffusers"])
def test_transformer_given_as_vae_is_named(tmp_path, shapes, no_weight_reads):
    path = tmp_path / "wan2.2_ti2v_5B_fp16.safetensors"
    write_header_only(path, shapes)
    expect_file_error(path, "diffusion model", "diffusion_models")


def test_text_encoder_given_as_vae_is_named(tmp_path, no_weight_reads):
    path = tmp_path / "umt5_xxl.safetensors"
    write_header_only(path, {"encoder.block.0.layer.0.SelfAttention.q.weight": (64, 64), "shared.weight": (10, 64),
                             "spiece_model": (100,)})
    expect_file_error(path, "text-encoder", "text_encoders")


def test_truncated_and_non_safetensors_files_are_named(tmp_path, tiny_vae):
    path = tmp_path / "wan2.2_vae.safetensors"
    save_vae_single_file(tiny_vae, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    expect_file_error(path, "truncated")
    path.write_text("<html>404 Not Found</html>" * 10)
    expect_file_error(path, "not a safetensors file")
    expect_file_error(tmp_path / "absent.safetensors", "no such file")


def test_incomplete_or_reshaped_wan22_file_is_refused(tmp_path, no_weight_reads):
    config = tiny_vae_config()
    original = as_original(meta_shapes(AutoencoderKLWan, **config), config["num_res_blocks"])
    path = tmp_path / "vae.safetensors"
    write_header_only(path, {k: v for k, v in original.items() if k != "decoder.upsamples.1.upsamples.1.residual.6.bias"})
    expect_file_error(path, "missing", "decoder.up_blocks.1.resnets.1.conv2.bias")
    write_header_only(path, dict(original, **{"decoder.middle.1.proj.weight": (7, 96, 1, 1)}))
    expect_file_error(path, "wrong shape", "decoder.mid_block.attentions.0.proj.weight")
    moved = {k.replace("encoder.downsamples.0.downsamples.1.resample", "encoder.downsamples.0.downsamples.5.resample"): v
             for k, v in original.items()}
    write_header_only(path, moved)
    expect_file_error(path, "unexpected positions", "encoder.downsamples.0.downsamples.5.resample.1.weight")
