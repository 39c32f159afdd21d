"""fp8 storage, block offloading (also under changing LoRA chains), VAE tiling, compilation and the
attention choice, each against the default computation on the tiny models."""


import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.predict_flow import predict_flow
from wan_egoexo.memory import attention_choice
from wan_egoexo.memory.compile import blocks_compiled, compile_blocks
from wan_egoexo.memory.fp8_weights import enable_fp8_storage, fp8_storage_enabled
from wan_egoexo.memory.modulation import (disable_compact_modulation, enable_compact_modulation)
from wan_egoexo.memory.offload import (block_offload_enabled, disable_block_offload, enable_block_offload,
                                       execution_device, resident_blocks)
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

@pytest.mark.parametrize("resident", [0, 1, 2])
@pytest.mark.parametrize("compact_first", [True, False], ids=["compact-then-offload", "offload-then-compact"])
def test_partial_block_offload_equals_resident_and_can_be_undone(resident, compact_first):
    model = build_tiny_transformer(0)
    args = memory_inputs()
    with torch.no_grad():
        expected = predict_flow(model, *args)
    if compact_first:
        enable_compact_modulation(model)
    enable_block_offload(model, "cpu", resident=resident)
    if not compact_first:
        enable_compact_modulation(model)  # plain PyTorch hooks: the order does not matter
    assert block_offload_enabled(model) and execution_device(model) == torch.device("cpu")
    assert resident_blocks(model) == resident
    streamed = model.blocks[resident:]
    at_rest = [block.attn1.to_q.weight.data for block in streamed]
    seen = []
    probes = [block.attn1.to_q.register_forward_pre_hook(lambda m, _: seen.append(m.weight.data.data_ptr()))
              for block in streamed]
    with torch.no_grad():
        first, second = predict_flow(model, *args), predict_flow(model, *args)
    for probe in probes:
        probe.remove()
    # every streamed block ran on a fresh copy of its weights, and is back on its stored copy now
    assert len(seen) == 2 * len(streamed) and not {t.data_ptr() for t in at_rest} & set(seen)
    assert [block.attn1.to_q.weight.data.data_ptr() for block in streamed] == [t.data_ptr() for t in at_rest]
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, second)
    disable_block_offload(model, "cpu")
    disable_compact_modulation(model)
    assert not block_offload_enabled(model) and resident_blocks(model) == 2
    with torch.no_grad():
        assert torch.equal(predict_flow(model, *args), expected)


def test_block_offload_recovers_from_a_forward_that_raised():
    model = build_tiny_transformer(0)
    args = memory_inputs()
    with torch.no_grad():
        expected = predict_flow(model, *args)
    enable_block_offload(model, "cpu", resident=0)

    def fail(_module, _args):
        raise RuntimeError("out of memory (simulated)")

    at_rest = [block.attn1.to_q.weight.data for block in model.blocks]
    handle = model.blocks[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="simulated"), torch.no_grad():
        predict_flow(model, *args)
    handle.remove()
    # back on the stored copies as soon as the forward raised, not only at the next forward: weights
    # edited in between (a LoRA merged in place) must land in the copies the blocks stream from
    assert [block.attn1.to_q.weight.data.data_ptr() for block in model.blocks] == [t.data_ptr() for t in at_rest]
    with torch.no_grad():
        torch.testing.assert_close(predict_flow(model, *args), expected, rtol=1e-5, atol=1e-5)


def test_block_offload_argument_errors():
    model = build_tiny_transformer(0)
    with pytest.raises(InputError, match="resident blocks"):
        enable_block_offload(model, "cpu", resident=3)
    with pytest.raises(InputError, match="streams need an available CUDA device"):
        enable_block_offload(model, "cpu", use_stream=True)
    enable_block_offload(model, "cpu")
    with pytest.raises(InputError, match="already enabled"):
        enable_block_offload(model, "cpu")


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


@pytest.mark.parametrize("lora_mode", ["merged", "unfused"])
def test_lora_chain_and_resident_blocks_change_between_runs(tmp_path, lora_mode):
    """prepare_for_sampling: runs with changing LoRA chains and resident block counts equal plain
    resident runs with the chain applied once."""
    import wan_egoexo.memory.runtime as runtime
    from wan_egoexo.lora import activate_loras
    from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt

    base = build_tiny_transformer(0)
    a = save_worldwander_ckpt(random_lora_state_dict(base, rank=4, seed=1), tmp_path / "a.ckpt")
    b = save_worldwander_ckpt(random_lora_state_dict(base, rank=2, seed=2), tmp_path / "b.ckpt")
    args = memory_inputs()
    model = build_tiny_transformer(0)
    runs = [([(a, 1.0)], 0), ([(a, 0.5)], 0), ([(a, 0.5), (b, 1.0)], 1), ([(a, 0.5), (b, 1.0)], None), ([], 1)]
    for chain, resident in runs:
        runtime.prepare_for_sampling(model, chain, resident, "cpu", lora_mode)
        assert resident_blocks(model) == (2 if resident is None else resident)
        assert bool(getattr(model, "peft_config", None)) == (lora_mode == "unfused" and bool(chain))
        reference = build_tiny_transformer(0)
        activate_loras(reference, chain)
        with torch.no_grad():
            torch.testing.assert_close(predict_flow(model, *args), predict_flow(reference, *args),
                                       rtol=1e-5, atol=1e-5)
    runtime.prepare_for_sampling(model, [], None, "cpu", lora_mode)
    assert not block_offload_enabled(model)
    plain = build_tiny_transformer(0)
    assert all(torch.equal(t, plain.state_dict()[n]) for n, t in model.state_dict().items())
