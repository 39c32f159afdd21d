"""Each memory/speed option against the default computation on the tiny models, plus the FLOP
count, the memory model and the automatic choice."""

import shutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wan_egoexo.errors import InputError
from wan_egoexo.in_context import predict_flow
from wan_egoexo.memory import attention_choice, auto, footprint
from wan_egoexo.memory.compile import blocks_compiled, compile_blocks
from wan_egoexo.memory.flops import WAN22_5B_CONFIG, predict_flow_flops
from wan_egoexo.memory.fp8_weights import enable_fp8_storage, fp8_storage_enabled
from wan_egoexo.memory.modulation import (MAX_SEGMENTS, compact_modulation, compact_modulation_enabled,
                                          disable_compact_modulation, enable_compact_modulation, timestep_segments)
from wan_egoexo.memory.offload import (block_offload_enabled, disable_block_offload, enable_block_offload,
                                       execution_device)
from wan_egoexo.memory.prompt_cache import (encode_prompts_cached, load_cached_embedding, prompt_cache_key,
                                            save_cached_embedding, text_encoder_fingerprint)
from wan_egoexo.memory.vae_chunking import disable_vae_tiling, enable_vae_tiling, vae_tiling_enabled
from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG, build_tiny_transformer


def _inputs(batch=2, reference=True, seed=0, text_tokens=7):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, 48, 3, 8, 12, generator=g)
    target = torch.randn(batch, 48, 3, 8, 12, generator=g)
    ref = torch.randn(batch, 48, 1, 8, 12, generator=g) if reference else None
    text = torch.randn(batch, text_tokens, 32, generator=g)
    timestep = torch.tensor([700.0, 250.0][:batch])
    return target, timestep, text, source, ref


def _rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------ compact modulation

def test_timestep_segments_match_a_plain_run_length_count():
    per_token = torch.tensor([[0, 0, 0, 5, 5, 9, 9, 9], [0, 0, 0, 7, 7, 9, 9, 9.0]])
    values, lengths = timestep_segments(per_token)
    expected, start = [], 0
    for j in range(1, per_token.shape[1] + 1):  # independent: walk the columns
        if j == per_token.shape[1] or not torch.equal(per_token[:, j], per_token[:, j - 1]):
            expected.append((start, j))
            start = j
    assert lengths == [stop - begin for begin, stop in expected]
    assert torch.equal(values, per_token[:, [begin for begin, _ in expected]])


@pytest.mark.parametrize("reference", [True, False], ids=["ego2exo", "exo2ego"])
def test_compact_modulation_matches_default_forward(reference):
    model = build_tiny_transformer(0)
    args = _inputs(reference=reference)
    with torch.no_grad():
        default = predict_flow(model, *args)
        with compact_modulation(model):
            assert compact_modulation_enabled(model)
            compact = predict_flow(model, *args)
        after = predict_flow(model, *args)
    assert not compact_modulation_enabled(model)
    # The blocks are bitwise equal (next test); the embedder's matmul on 2 rows instead of N may
    # differ in the last bit.
    torch.testing.assert_close(compact, default, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, default)  # removing the hooks restores diffusers' computation exactly


def test_compact_block_is_bitwise_the_default_block():
    model = build_tiny_transformer(0)
    block = model.blocks[0]
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 30, 256, generator=g)
    text = torch.randn(2, 5, 256, generator=g)
    compact_temb = torch.randn(2, 2, 6, 256, generator=g)
    lengths = [12, 18]
    full_temb = torch.repeat_interleave(compact_temb, torch.tensor(lengths), dim=1)
    rotary = model.rope(torch.zeros(1, 48, 30, 2, 2))  # 30 tokens of the 1x2x2 patch grid
    with torch.no_grad():
        expected = block(hidden, text, full_temb, rotary)
        enable_compact_modulation(model)
        hook = block._diffusers_hook.get_hook("wan_egoexo_compact_modulation")
        hook.segments.lengths = lengths
        got = block(hidden, text, compact_temb, rotary)
    assert torch.equal(got, expected)


def test_compact_modulation_in_bf16_and_with_gradients():
    model = build_tiny_transformer(0)
    target, timestep, text, source, reference = _inputs()
    default = predict_flow(model.to(torch.bfloat16), target, timestep, text, source, reference)
    with compact_modulation(model):
        compact = predict_flow(model, target, timestep, text, source, reference)
    assert _rel(compact, default) < 1e-2  # bf16 rounding at most (here usually exactly equal)
    # Gradients through the latents (what LoRA training needs) are unchanged.
    model = build_tiny_transformer(0)
    grads = []
    for use_compact in (False, True):
        leaf = target.clone().requires_grad_(True)
        if use_compact:
            enable_compact_modulation(model)
        predict_flow(model, leaf, timestep, text, source, reference).square().sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


class _LargestStorage(TorchDispatchMode):
    """The largest storage any op output lives in, weights (and views of them) excluded."""

    def __init__(self, model):
        super().__init__()
        self.largest = 0
        self.weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.untyped_storage().data_ptr() not in self.weights:
                self.largest = max(self.largest, leaf.untyped_storage().nbytes())
        return out


def test_compact_modulation_never_allocates_a_per_token_modulation_tensor():
    model = build_tiny_transformer(0)
    target, timestep, text, source, reference = _inputs()
    tokens = 7 * (8 // 2) * (12 // 2)
    per_token_modulation = 2 * tokens * 6 * 256 * 4  # [B, N, 6, dim] float32
    with torch.no_grad():
        with _LargestStorage(model) as default:
            predict_flow(model, target, timestep, text, source, reference)
        enable_compact_modulation(model)
        with _LargestStorage(model) as compact:
            predict_flow(model, target, timestep, text, source, reference)
    assert default.largest >= per_token_modulation
    assert compact.largest < per_token_modulation / 2


def test_compact_modulation_falls_back_for_many_distinct_timesteps():
    model = build_tiny_transformer(0)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(1, 48, 2, 8, 8, generator=g)
    tokens = 2 * 4 * 4
    assert tokens > MAX_SEGMENTS
    per_token = torch.randperm(tokens, generator=g)[None].float() * 10  # every token its own timestep
    text = torch.randn(1, 3, 32, generator=g)
    with torch.no_grad():
        expected = model(hidden, per_token, text, return_dict=False)[0]
        expected_scalar = model(hidden, torch.tensor([300.0]), text, return_dict=False)[0]
        enable_compact_modulation(model)
        got = model(hidden, per_token, text, return_dict=False)[0]
        hook = model.blocks[0]._diffusers_hook.get_hook("wan_egoexo_compact_modulation")
        assert hook.segments.lengths is None  # diffusers' own path was taken
        scalar = model(hidden, torch.tensor([300.0]), text, return_dict=False)[0]  # 1-D timesteps
    assert torch.equal(got, expected) and torch.equal(scalar, expected_scalar)


def test_compact_modulation_rejects_wrong_objects_and_order(tmp_path):
    with pytest.raises(InputError, match="WanTransformer3DModel"):
        enable_compact_modulation(torch.nn.Linear(2, 2))
    model = build_tiny_transformer(0)
    enable_block_offload(model, "cpu", disk_path=tmp_path)
    with pytest.raises(InputError, match="before block offloading"):
        enable_compact_modulation(model)


# ------------------------------------------------------------------ fp8 weights

def test_fp8_storage_equals_weights_rounded_to_fp8_and_stays_close_to_default():
    model = build_tiny_transformer(0)
    args = _inputs()
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
    assert _rel(got, default) < 0.05  # the stated bound (measured: about 0.6% on the tiny model)
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
    args = _inputs()
    with torch.no_grad():
        default = predict_flow(model, *args)
        enable_fp8_storage(model, compute_dtype=torch.float32)
        got = predict_flow(model, *args)
    lora_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    base_dtypes = {p.dtype for n, p in model.named_parameters() if n.endswith("attn1.to_q.base_layer.weight")}
    assert lora_dtypes == {torch.float32} and base_dtypes == {torch.float8_e4m3fn}
    assert _rel(got, default) < 0.05


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
    args = _inputs()
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


# ------------------------------------------------------------------ prompt cache

@pytest.fixture(scope="module")
def tiny_text_encoder_files(tmp_path_factory):
    from wan_egoexo.tiny.text_encoder import build_tiny_umt5, save_umt5_fp8_scaled, train_tiny_spiece

    root = tmp_path_factory.mktemp("umt5")
    spiece = train_tiny_spiece(root)
    first, second = root / "umt5_a.safetensors", root / "umt5_b.safetensors"
    save_umt5_fp8_scaled(build_tiny_umt5(0), spiece, first)
    save_umt5_fp8_scaled(build_tiny_umt5(1), spiece, second)
    return first, second


def _counting_loader(calls):
    from wan_egoexo.text_encoder_loader import load_text_encoder

    def load(path, **kwargs):
        calls.append(path)
        return load_text_encoder(path, **kwargs)
    return load


def test_prompt_cache_hits_without_loading_the_encoder(tiny_text_encoder_files, tmp_path):
    from wan_egoexo.text_encoder_loader import load_text_encoder
    from wan_egoexo.text_encoding import encode_prompts

    encoder_file, other_file = tiny_text_encoder_files
    prompts = ["Transform it into the first-person perspective.", ""]
    direct = encode_prompts(load_text_encoder(encoder_file, device="cpu"), prompts)
    calls = []
    first, stats = encode_prompts_cached(encoder_file, prompts, tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats == {"hits": 0, "misses": 2, "loaded": True} and len(calls) == 1
    assert torch.equal(first, direct)
    second, stats = encode_prompts_cached(encoder_file, prompts, tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats == {"hits": 2, "misses": 0, "loaded": False} and len(calls) == 1
    assert torch.equal(second, direct)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no partial files
    # Only the real-token rows are stored: an entry is far smaller than [512, D] float32.
    assert all(p.stat().st_size < 512 * 32 * 4 / 4 for p in tmp_path.glob("*.safetensors"))
    # A moved copy of the same encoder hits (content fingerprint); another encoder misses.
    copy = tmp_path / "moved" / "renamed.safetensors"
    copy.parent.mkdir()
    shutil.copy(encoder_file, copy)
    _, stats = encode_prompts_cached(copy, prompts, tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats["hits"] == 2
    assert text_encoder_fingerprint(other_file) != text_encoder_fingerprint(encoder_file)
    other, stats = encode_prompts_cached(other_file, prompts[:1], tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats["misses"] == 1 and not torch.equal(other[0], direct[0])


def test_prompt_cache_entry_round_trip_and_damage(tiny_text_encoder_files, tmp_path):
    encoder_file, _ = tiny_text_encoder_files
    key = prompt_cache_key(text_encoder_fingerprint(encoder_file), "a prompt")
    assert key != prompt_cache_key(text_encoder_fingerprint(encoder_file), "a prompt", dtype=torch.bfloat16)
    embedding = torch.zeros(512, 32)
    embedding[:5] = torch.randn(5, 32)
    path = save_cached_embedding(tmp_path / f"{key}.safetensors", embedding, "a prompt")
    assert torch.equal(load_cached_embedding(path, "a prompt", 512), embedding)
    assert load_cached_embedding(path, "another prompt", 512) is None  # metadata checked
    path.write_bytes(path.read_bytes()[:-7])  # truncated: a miss, not an error
    assert load_cached_embedding(path, "a prompt", 512) is None
    calls = []
    embeds, stats = encode_prompts_cached(encoder_file, ["a prompt"], tmp_path, device="cpu",
                                          load=_counting_loader(calls))
    assert stats["loaded"] and embeds.shape == (1, 512, 32)


def test_prompt_cache_errors(tmp_path):
    from wan_egoexo.errors import ModelFileError

    with pytest.raises(ModelFileError, match="no such file"):
        encode_prompts_cached(tmp_path / "missing.safetensors", ["x"], tmp_path)
    with pytest.raises(InputError, match="prompts"):
        encode_prompts_cached(tmp_path / "missing.safetensors", [], tmp_path)


# ------------------------------------------------------------------ compile, attention choice

def test_compiled_blocks_give_the_same_output():
    model = build_tiny_transformer(0)
    args = _inputs()
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


# ------------------------------------------------------------------ FLOPs, memory model, automatic choice

def test_flop_count_matches_torch_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = build_tiny_transformer(0)
    args = _inputs(text_tokens=512)
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
    args = _inputs()
    offloaded, resident = build_tiny_transformer(0), build_tiny_transformer(0)
    for chain in ([(a, 1.0)], [(a, 0.5)], [(a, 0.5), (b, 1.0)], []):
        runtime.prepare_for_sampling(offloaded, chain, offload=True, device="cpu")
        activate_loras(resident, chain)
        with torch.no_grad():
            assert torch.equal(predict_flow(offloaded, *args), predict_flow(resident, *args))
    runtime.prepare_for_sampling(offloaded, [], offload=False, device="cpu")
    assert not block_offload_enabled(offloaded)
