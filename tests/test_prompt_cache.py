"""The on-disk prompt-embedding cache: hits never load UMT5, entries round-trip, damage is a miss."""

import shutil

import pytest
import torch

from wan_egoexo.errors import InputError
from wan_egoexo.memory.prompt_cache import (encode_prompts_cached, load_cached_embedding, prompt_cache_key,
                                            save_cached_embedding, text_encoder_fingerprint)


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

