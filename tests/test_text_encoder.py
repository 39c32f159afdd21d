"""UMT5 loading (fp8-scaled single file, plain single file, Diffusers folder), tokenizer, prompt encoding."""

import html
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

import wan_egoexo.models.text_encoder_loader as loader_module
from wan_egoexo.errors import InputError, ModelFileError
from wan_egoexo.models.checkpoint_files import TensorInfo
from wan_egoexo.models.text_encoder_loader import infer_umt5_config, load_text_encoder, reject_non_umt5
from wan_egoexo.models.text_encoding import encode_prompts
from wan_egoexo.tiny.text_encoder import (TINY_UMT5_CONFIG, WORLDWANDER_PROMPTS, build_tiny_umt5,
                                          save_umt5_fp8_scaled, save_umt5_plain, train_tiny_spiece)
from wan_egoexo.models.umt5_tokenizer import tokenizer_from_model_proto

PROMPTS = [WORLDWANDER_PROMPTS[0], "", "a person   walks in the kitchen &amp; picks up a cup of coffee"]
LINEAR_SUFFIXES = ("SelfAttention.q.weight", "SelfAttention.k.weight", "SelfAttention.v.weight",
                   "SelfAttention.o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")


def dequantise_independently(path):
    """The fp8 file's weights as the format defines them, computed here without the loader."""
    raw = load_file(str(path))
    out = {}
    for key, value in raw.items():
        if key in ("scaled_fp8", "spiece_model") or key.endswith((".scale_weight", ".scale_input")):
            continue
        if value.dtype == torch.float8_e4m3fn:
            out[key] = value.float() * raw[key[: -len("weight")] + "scale_weight"]
        else:
            out[key] = value.float()
    return out


def clean(prompt):
    """diffusers' prompt_clean without ftfy: HTML-unescape twice, collapse whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(prompt)).strip()).strip()


def diffusers_reference(model, hf_tokenizer, prompts, max_length):
    """WanPipeline._get_t5_prompt_embeds, step by step, on a plain transformers model."""
    prompts = [clean(p) for p in prompts]
    inputs = hf_tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                          add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    seq_lens = inputs.attention_mask.gt(0).sum(dim=1)
    with torch.no_grad():
        hidden = model(inputs.input_ids, inputs.attention_mask).last_hidden_state
    rows = [torch.cat([h[:n], h.new_zeros(max_length - n, h.shape[1])]) for h, n in zip(hidden, seq_lens)]
    return torch.stack(rows).float()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("umt5")
    model = build_tiny_umt5(seed=0)
    spiece = train_tiny_spiece(root / "spm")
    fp8_path = root / "umt5_tiny_fp8_e4m3fn_scaled.safetensors"
    save_umt5_fp8_scaled(model, spiece, fp8_path, with_scale_input=True)

    # The model the fp8 file describes, built with transformers' own loading.
    reference = UMT5EncoderModel(UMT5Config(**TINY_UMT5_CONFIG)).eval()
    result = reference.load_state_dict(dequantise_independently(fp8_path), strict=False)
    assert set(result.missing_keys) <= {"encoder.embed_tokens.weight"} and not result.unexpected_keys
    hf_tokenizer = T5Tokenizer.from_pretrained(str(root / "spm"), extra_ids=0)

    pipeline = root / "diffusers"
    reference.save_pretrained(str(pipeline / "text_encoder"))
    hf_tokenizer.save_pretrained(str(pipeline / "tokenizer"))
    return dict(root=root, model=model, spiece=spiece, fp8=fp8_path, reference=reference,
                hf_tokenizer=hf_tokenizer, pipeline=pipeline)


@pytest.fixture(scope="module")
def fp8_encoder(files):
    return load_text_encoder(files["fp8"], device="cpu", dtype=torch.float32)


def test_fp8_dequantisation_is_bit_exact(files, fp8_encoder):
    raw = load_file(str(files["fp8"]))
    params = dict(fp8_encoder.model.named_parameters(remove_duplicate=False))
    linear_keys = [k for k in raw if k.endswith(LINEAR_SUFFIXES)]
    assert len(linear_keys) == 7 * TINY_UMT5_CONFIG["num_layers"]
    for key in linear_keys:
        assert raw[key].dtype == torch.float8_e4m3fn
        expected = raw[key].float() * raw[key[: -len("weight")] + "scale_weight"]
        assert torch.equal(params[key], expected), key
    assert torch.equal(params["shared.weight"], raw["shared.weight"].float())
    assert params["encoder.embed_tokens.weight"] is params["shared.weight"]
    assert not fp8_encoder.model.training

    bf16 = load_text_encoder(files["fp8"], device="cpu", dtype=torch.bfloat16)
    key = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
    expected = (raw[key].float() * raw[key[: -len("weight")] + "scale_weight"]).to(torch.bfloat16)
    assert torch.equal(bf16.model.get_parameter(key), expected)


@pytest.mark.parametrize("folder", ["root", "text_encoder"])
def test_fp8_file_and_diffusers_folder_encode_like_the_reference(files, fp8_encoder, folder):
    expected = diffusers_reference(files["reference"], files["hf_tokenizer"], PROMPTS, 512)
    path = files["pipeline"] if folder == "root" else files["pipeline"] / "text_encoder"
    diffusers_encoder = load_text_encoder(path, device="cpu", dtype=torch.float32)
    for encoder in (fp8_encoder, diffusers_encoder):
        got = encode_prompts(encoder, PROMPTS, max_length=512)
        assert got.shape == (3, 512, TINY_UMT5_CONFIG["d_model"]) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The reference is not trivially close to the unquantised source model: fp8 really changed weights.
    source = diffusers_reference(files["model"], files["hf_tokenizer"], PROMPTS, 512)
    assert (source - expected).abs().max() > 1e-3


def test_plain_file_with_separate_tokenizer(files, tmp_path):
    path = tmp_path / "umt5_tiny_fp16.safetensors"
    save_umt5_plain(files["model"], path, dtype=torch.float16)
    with pytest.raises(ModelFileError, match="spiece_model.*tokenizer_path"):
        load_text_encoder(path, device="cpu")
    encoder = load_text_encoder(path, device="cpu", dtype=torch.float32,
                                tokenizer_path=files["root"] / "spm" / "spiece.model")
    for key, value in files["model"].state_dict().items():
        assert torch.equal(encoder.model.get_parameter(key), value.half().float()), key


def test_tokenizer_ids_match_transformers_t5_tokenizer(files):
    ours = tokenizer_from_model_proto(files["spiece"], "spiece")
    hf = files["hf_tokenizer"]
    texts = PROMPTS + ["Héllo, WORLD!! 123  zebra  Ωmega", "  leading and trailing  "]
    for max_length in (512, 6):
        ids, mask = ours.tokenize(texts, max_length=max_length)
        expected = hf(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        assert torch.equal(ids, expected.input_ids)
        assert torch.equal(mask, expected.attention_mask)
        lengths = mask.sum(1)
        assert ids.shape[1] == lengths.max() <= max_length
        assert all(ids[i, n - 1] == 1 for i, n in enumerate(lengths))  # EOS last
        assert (ids[mask == 0] == 0).all()  # pad id 0
    # The Diffusers tokenizer folder answers the same through the same interface.
    folder_encoder_tokenizer = load_text_encoder(files["pipeline"], device="cpu").tokenizer
    assert torch.equal(folder_encoder_tokenizer.tokenize(texts)[0], ours.tokenize(texts)[0])
    with pytest.raises(InputError, match="max_length"):
        ours.tokenize(texts, max_length=0)


def test_embeddings_are_zero_after_real_tokens(fp8_encoder):
    ids, mask = fp8_encoder.tokenizer.tokenize([clean(p) for p in PROMPTS])
    embeddings = encode_prompts(fp8_encoder, PROMPTS, max_length=64)
    for row, length in zip(embeddings, mask.sum(1)):
        assert (row[:length].abs().sum(-1) > 0).all()
        assert torch.count_nonzero(row[length:]) == 0
    assert embeddings.shape[1] == 64


def test_running_over_longest_length_equals_full_padding(fp8_encoder):
    max_length = 96
    embeddings = encode_prompts(fp8_encoder, PROMPTS, max_length=max_length)
    ids, mask = fp8_encoder.tokenizer.tokenize([clean(p) for p in PROMPTS])
    pad = max_length - ids.shape[1]
    ids_full = torch.nn.functional.pad(ids, (0, pad))
    mask_full = torch.nn.functional.pad(mask, (0, pad))
    with torch.no_grad():
        full = fp8_encoder.model(input_ids=ids_full, attention_mask=mask_full).last_hidden_state
        leaky = fp8_encoder.model(input_ids=ids_full).last_hidden_state  # padding attended to
    keep = mask_full.bool().unsqueeze(-1)
    torch.testing.assert_close(embeddings, full * keep, atol=1e-5, rtol=0)  # float rounding only
    assert ((leaky - full) * keep).abs().max() > 1e-2  # the tolerance would catch a mask leak


def _write_header_file(path, shapes, dtype=torch.float16):
    save_file({key: torch.zeros(shape, dtype=dtype) for key, shape in shapes.items()}, str(path))
    return path


def _t5_shapes(vocab, d, heads, layers, bias_blocks, gated=True):
    shapes = {"shared.weight": (vocab, d), "encoder.final_layer_norm.weight": (d,)}
    for n in range(layers):
        stem = f"encoder.block.{n}.layer"
        for name in "qkvo":
            shapes[f"{stem}.0.SelfAttention.{name}.weight"] = (d, d)
        if n in bias_blocks:
            shapes[f"{stem}.0.SelfAttention.relative_attention_bias.weight"] = (32, heads)
        ff = ["wi_0", "wi_1", "wo"] if gated else ["wi", "wo"]
        for name in ff:
            shapes[f"{stem}.1.DenseReluDense.{name}.weight"] = (d, d)
        shapes[f"{stem}.0.layer_norm.weight"] = shapes[f"{stem}.1.layer_norm.weight"] = (d,)
    return shapes


@pytest.fixture
def no_weight_reads(monkeypatch):
    """Every check must happen from the header, before any weight is read."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read before the file was checked")
    monkeypatch.setattr(loader_module, "_load_weights", refuse)


def test_wrong_files_are_named(tmp_path, files, no_weight_reads):
    cases = {
        "t5xxl_fp16.safetensors": (_t5_shapes(32128, 2, 2, 3, bias_blocks={0}), r"T5 v1\.1.*vocabulary 32128"),
        "t5_v10.safetensors": (_t5_shapes(300, 4, 2, 2, bias_blocks={0, 1}, gated=False), r"T5 \(v1\.0"),
        "clip_l.safetensors": ({"text_model.embeddings.token_embedding.weight": (10, 4),
                                "text_model.encoder.layers.0.mlp.fc1.weight": (8, 4)}, "CLIP text encoder"),
        "wan2.2_ti2v_5B.safetensors": ({"blocks.0.self_attn.q.weight": (4, 4), "patch_embedding.weight": (4, 48, 1, 2, 2)},
                                       "diffusion transformer"),
        "umt5-xxl-enc-bf16.safetensors": ({"token_embedding.weight": (10, 4), "blocks.0.attn.q.weight": (4, 4)},
                                          "original Wan layout"),
        "wan2.2_vae.safetensors": ({"encoder.conv1.weight": (4, 12, 3, 3, 3),
                                    "decoder.upsamples.0.residual.0.gamma": (4, 1, 1, 1)}, "VAE"),
    }
    for name, (shapes, pattern) in cases.items():
        path = _write_header_file(tmp_path / name, shapes)
        with pytest.raises(ModelFileError, match=pattern) as info:
            load_text_encoder(path, device="cpu")
        assert name in str(info.value) and "UMT5" in str(info.value)

    incomplete = load_file(str(files["fp8"]))
    del incomplete["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    save_file(incomplete, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(ModelFileError, match="missing tensors.*block.1.layer.1.DenseReluDense.wo"):
        load_text_encoder(tmp_path / "incomplete.safetensors", device="cpu")

    data = files["fp8"].read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFileError, match="truncated.safetensors.*truncated"):
        load_text_encoder(tmp_path / "truncated.safetensors", device="cpu")
    (tmp_path / "notes.safetensors").write_text("not a model at all, just some text")
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_text_encoder(tmp_path / "notes.safetensors", device="cpu")


def test_diffusers_folder_without_tokenizer_is_named(tmp_path, files, no_weight_reads):
    lonely = tmp_path / "pipeline" / "text_encoder"
    files["reference"].save_pretrained(str(lonely))
    with pytest.raises(ModelFileError, match="no 'spiece_model' tensor and no tokenizer/ folder"):
        load_text_encoder(tmp_path / "pipeline", device="cpu")


def test_real_umt5_xxl_architecture_is_read_from_shapes():
    """The header of umt5_xxl_fp8_e4m3fn_scaled.safetensors (shapes from the spec), never written to disk."""
    vocab, d, heads, d_kv, ff, layers = 256384, 4096, 64, 64, 10240, 24
    header = {"shared.weight": TensorInfo("F16", (vocab, d)), "encoder.final_layer_norm.weight": TensorInfo("F16", (d,)),
              "scaled_fp8": TensorInfo("F8_E4M3", (0,)), "spiece_model": TensorInfo("U8", (4548313,))}
    for n in range(layers):
        stem = f"encoder.block.{n}.layer"
        linears = {f"{stem}.0.SelfAttention.{x}": (heads * d_kv, d) for x in "qkv"}
        linears[f"{stem}.0.SelfAttention.o"] = (d, heads * d_kv)
        linears.update({f"{stem}.1.DenseReluDense.wi_0": (ff, d), f"{stem}.1.DenseReluDense.wi_1": (ff, d),
                        f"{stem}.1.DenseReluDense.wo": (d, ff)})
        for name, shape in linears.items():
            header[f"{name}.weight"] = TensorInfo("F8_E4M3", shape)
            header[f"{name}.scale_weight"] = TensorInfo("F32", ())
        header[f"{stem}.0.SelfAttention.relative_attention_bias.weight"] = TensorInfo("F16", (32, heads))
        header[f"{stem}.0.layer_norm.weight"] = header[f"{stem}.1.layer_norm.weight"] = TensorInfo("F16", (d,))
    reject_non_umt5("umt5_xxl.safetensors", header)
    config = infer_umt5_config("umt5_xxl.safetensors", header)
    assert (config.vocab_size, config.d_model, config.num_heads, config.d_kv, config.d_ff, config.num_layers,
            config.relative_attention_num_buckets) == (vocab, d, heads, d_kv, ff, layers, 32)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"  # gated GELU, tanh approximation
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    file_shapes = {k: v.shape for k, v in header.items()
                   if not k.endswith(".scale_weight") and k not in ("scaled_fp8", "spiece_model")}
    assert model_shapes == file_shapes
