"""fp8 storage, block offloading (also under changing LoRA chains), VAE tiling, compilation and the
attention choice, each against the default computation on the tiny models."""


import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context import predict_flow
from wan_egoexo.memory import attention_choice
from wan_egoexo.memory.compile import blocks_compiled, compile_blocks
from wan_egoexo.memory.fp8_weights import enable_fp8_storage, fp8_storage_enabled
from wan_egoexo.memory.modulation import (disable_compact_modulation, enable_compact_modulation)
from wan_egoexo.memory.offload import (block_offload_enabled, disable_block_offload, enable_block_offload,
                                       execution_device)
from wan_egoexo.memory.vae_chunking import disable_vae_tiling, enable_vae_tiling, vae_tiling_enabled
from wan_egoexo.tiny.transformer import build_tiny_transformer

from memory_helpers import memory_inputs, rel_error


# ------------------------------------------------------------------ fp8 weights

def test_fp8_storage_equals_weights_rounded_to_fp8_and_stays_close_to_default():
    model = build_tiny_transformer(0)
    args = memory_inputs()
    rounded = build_tiny_transformer(0)
    with torch.no_grad():  # the independent reference: block linears rounded through float8, kept in fp32
        for name, module in rounded.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and "norm" not in name:
                for param in module.parameters(recurse=False):
                    param.copy_(param.to(torch.float8_e4m3fn).float())
        default = predict_flow(model, *args)
        expected = predict_flow(rounded, *args)
        enable_fp8_storage(model, compute_dtype=torch.float32)
        got = predict_flow(model, *args)
    assert fp8_storage_enabled(model)
    assert model.blocks[0].ffn.net[0].proj.weight.dtype == torch.float8_e4m3fn
    assert model.proj_out.weight.dtype == torch.float32 and model.blocks[0].norm2.weight.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert rel_error(got, default) < 0.05  # the stated bound (measured: about 0.6% on the tiny model)
    with pytest.raises(InputError, match="already enabled"):
        enable_fp8_storage(model)
    with pytest.raises(InputError, match="storage_dtype"):
        enable_fp8_storage(build_tiny_transformer(0), storage_dtype=torch.float16)


def test_fp8_storage_keeps_lora_adapters_in_full_precision(tmp_path):
    from wan_egoexo.lora import apply_lora
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt

    model = build_tiny_transformer(0)
    path = save_worldwander_ckpt(random_lora_state_dict(model, rank=4, seed=1), tmp_path / "lora.ckpt")
    apply_lora(model, path)
    args = memory_inputs()
    with torch.no_grad():
        default = predict_flow(model, *args)
        enable_fp8_storage(model, compute_dtype=torch.float32)
        got = predict_flow(model, *args)
    lora_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    base_dtypes = {p.dtype for n, p in model.named_parameters() if n.endswith("attn1.to_q.base_layer.weight")}
    assert lora_dtypes == {torch.float32} and base_dtypes == {torch.float8_e4m3fn}
    assert rel_error(got, default) < 0.05


# ------------------------------------------------------------------ block offloading

def _bare_forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 48, 4, 8, 12, generator=g)
    per_token = torch.cat([torch.zeros(2, 48), torch.full((2, 48), 600.0)], dim=1)
    text = torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        return model(hidden, per_token, text, return_dict=False)[0]


def test_block_offload_to_disk_gives_the_same_forward_and_can_be_undone(tmp_path):
    model = build_tiny_transformer(0)
    expected = _bare_forward(model)
    enable_compact_modulation(model)  # the documented order: compact modulation first
    enable_block_offload(model, "cpu", disk_path=tmp_path)
    assert block_offload_enabled(model) and execution_device(model) == torch.device("cpu")
    assert len(list(tmp_path.glob("*.safetensors"))) == 3  # two blocks and the rest of the model
    first, second = _bare_forward(model), _bare_forward(model)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)
    disable_block_offload(model, "cpu")
    disable_compact_modulation(model)
    assert not block_offload_enabled(model)
    assert torch.equal(_bare_forward(model), expected)


def test_block_offload_argument_errors(tmp_path):
    model = build_tiny_transformer(0)
    with pytest.raises(InputError, match="saves nothing"):
        enable_block_offload(model, "cpu")
    with pytest.raises(InputError, match="blocks_per_group"):
        enable_block_offload(model, "cpu", blocks_per_group=0, disk_path=tmp_path)
    with pytest.raises(InputError, match="streams need a CUDA device"):
        enable_block_offload(model, "cpu", use_stream=True, disk_path=tmp_path)
    enable_block_offload(model, "cpu", disk_path=tmp_path)
    with pytest.raises(InputError, match="already enabled"):
        enable_block_offload(model, "cpu", disk_path=tmp_path)


def test_predict_flow_with_block_offload(tmp_path):
    model = build_tiny_transformer(0)
    args = memory_inputs()
    with torch.no_grad():
        expected = predict_flow(model, *args)
        enable_block_offload(model, "cpu", disk_path=tmp_path)
        got = predict_flow(model, *args)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ VAE tiling

def _local_vae():
    """The tiny VAE with its output scaled down, so diffusers' final clamp to [-1, 1] never acts
    (the untiled reference clamps per tile, the tiled decode after blending)."""
    from wan_egoexo.tiny.vae import build_tiny_vae

    vae = build_tiny_vae(0)
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(0.01)
        vae.decoder.conv_out.bias.mul_(0.01)
    return vae


def _blend(a, b, extent, axis, unit):
    """diffusers' linear seam blend, in pixels: ``extent`` counts patchified rows/columns of ``unit`` pixels."""
    extent = min(a.shape[axis] // unit, b.shape[axis] // unit, extent)
    for k in range(extent):
        weight = k / extent
        src = slice(a.shape[axis] - unit * extent + unit * k, a.shape[axis] - unit * extent + unit * (k + 1))
        dst = slice(unit * k, unit * (k + 1))
        index_a = [slice(None)] * a.ndim
        index_b = [slice(None)] * b.ndim
        index_a[axis], index_b[axis] = src, dst
        b[tuple(index_b)] = a[tuple(index_a)] * (1 - weight) + b[tuple(index_b)] * weight
    return b


def _stitch(rows, extent, keep, unit, height, width):
    out_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = _blend(rows[i - 1][j], tile, extent, -2, unit)
            if j > 0:
                tile = _blend(row[j - 1], tile, extent, -1, unit)
            kept.append(tile[..., :keep, :keep])
        out_rows.append(torch.cat(kept, dim=-1))
    return torch.cat(out_rows, dim=-2)[..., :height, :width]


def test_vae_tiled_decode_is_the_blend_of_independent_tile_decodes():
    vae = _local_vae()
    z = torch.randn(1, 48, 2, 3, 6, generator=torch.Generator().manual_seed(0))  # wider than a tile
    tile, stride = 64, 32  # pixels; latent tile 4, stride 2; Wan2.2 decodes to 2x2-patchified pixels
    with torch.no_grad():
        rows = [[vae.decode(z[..., i:i + tile // 16, j:j + tile // 16]).sample for j in range(0, 6, stride // 16)]
                for i in range(0, 3, stride // 16)]
        expected = _stitch(rows, tile // 2 - stride // 2, stride, 2, 48, 96)
        enable_vae_tiling(vae, tile, stride)
        assert vae_tiling_enabled(vae)
        got = vae.decode(z).sample
    assert got.abs().max() < 0.9  # the clamp never acted
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    disable_vae_tiling(vae)
    assert not vae_tiling_enabled(vae)


def test_vae_tiled_encode_is_the_blend_of_independent_tile_encodes():
    vae = _local_vae()
    video = torch.rand(1, 3, 5, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tile, stride = 64, 32  # the encoder reads them in patchified pixels: 128 / 64 real pixels, latent 8 / 4
    with torch.no_grad():
        rows = [[vae.encode(video[..., i:i + 2 * tile, j:j + 2 * tile]).latent_dist.mode()
                 for j in range(0, 96, 2 * stride)] for i in range(0, 64, 2 * stride)]
        expected = _stitch(rows, tile // 8 - stride // 8, stride // 8, 1, 4, 6)
        enable_vae_tiling(vae, tile, stride)
        got = vae.encode(video).latent_dist.mode()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_vae_tiling_argument_errors():
    vae = _local_vae()
    with pytest.raises(InputError, match="multiple of 32"):
        enable_vae_tiling(vae, 100, 64)
    with pytest.raises(InputError, match="smaller than the tile"):
        enable_vae_tiling(vae, 64, 64)
    with pytest.raises(InputError, match="AutoencoderKLWan"):
        enable_vae_tiling(torch.nn.Linear(2, 2))

# ------------------------------------------------------------------ compile, attention choice

def test_compiled_blocks_give_the_same_output():
    model = build_tiny_transformer(0)
    args = memory_inputs()
    with torch.no_grad():
        expected = predict_flow(model, *args)
        enable_compact_modulation(model)
        compile_blocks(model, backend="eager")  # dynamo tracing through our hooks, without a C++ build
        got = predict_flow(model, *args)
    assert blocks_compiled(model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_choice(monkeypatch):
    assert attention_choice.choose_attention_backend("cpu") == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention_choice, "_packages", lambda: (True, True))
    for capability, expected in (((9, 0), ["_flash_3", "flash", "sdpa"]), ((8, 6), ["flash", "sdpa"]),
                                 ((7, 5), ["sdpa"])):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert attention_choice.available_attention_backends("cuda") == expected
    assert attention_choice.available_attention_backends("cuda", torch.float32) == ["sdpa"]
    monkeypatch.setattr(attention_choice, "_packages", lambda: (False, False))
    assert attention_choice.choose_attention_backend("cuda") == "sdpa"


def test_lora_chain_changes_under_block_offload(tmp_path, monkeypatch):
    """prepare_for_sampling: offloaded runs with changing LoRA chains equal resident runs exactly."""
    import wan_egoexo.memory.runtime as runtime
    from wan_egoexo.lora import activate_loras
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt

    # on the CPU, offloading goes to disk: give the runtime's enable call a folder per call
    folders = iter(tmp_path / f"off{i}" for i in range(10))
    real_enable = runtime.enable_block_offload
    monkeypatch.setattr(runtime, "enable_block_offload", lambda m, d: real_enable(m, d, disk_path=next(folders)))
    base = build_tiny_transformer(0)
    a = save_worldwander_ckpt(random_lora_state_dict(base, rank=4, seed=1), tmp_path / "a.ckpt")
    b = save_worldwander_ckpt(random_lora_state_dict(base, rank=2, seed=2), tmp_path / "b.ckpt")
    args = memory_inputs()
    offloaded, resident = build_tiny_transformer(0), build_tiny_transformer(0)
    for chain in ([(a, 1.0)], [(a, 0.5)], [(a, 0.5), (b, 1.0)], []):
        runtime.prepare_for_sampling(offloaded, chain, offload=True, device="cpu")
        activate_loras(resident, chain)
        with torch.no_grad():
            assert torch.equal(predict_flow(offloaded, *args), predict_flow(resident, *args))
    runtime.prepare_for_sampling(offloaded, [], offload=False, device="cpu")
    assert not block_offload_enabled(offloaded)
