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
    from wan_egoexo.models.text_encoder_loader import load_text_encoder

    def load(path, **kwargs):
        calls.append(path)
        return load_text_encoder(path, **kwargs)
    return load


def test_prompt_cache_hits_without_loading_the_encoder(tiny_text_encoder_files, tmp_path):
    from wan_egoexo.models.text_encoder_loader import load_text_encoder
    from wan_egoexo.models.text_encoding import encode_prompts

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



def _entry(tmp_path, width=32, name="entry.safetensors"):
    embedding = torch.zeros(512, width)
    embedding[:4] = torch.randn(4, width, generator=torch.Generator().manual_seed(1))
    return save_cached_embedding(tmp_path / name, embedding, "a prompt"), embedding


def _damage(data: bytes, kind: str) -> bytes:
    import math
    import struct

    (length,) = struct.unpack("<Q", data[:8])
    out = bytearray(data)
    if kind == "nan":  # the header intact, one value NaN
        out[8 + length + 20: 8 + length + 24] = struct.pack("<f", math.nan)
    elif kind == "random":
        out[8 + length:] = torch.randint(0, 256, (len(data) - 8 - length,), generator=torch.Generator()).numpy().astype("u1").tobytes()
    elif kind == "bit":
        out[8 + length + 37] ^= 0x04
    elif kind == "checksum":
        at = data.index(b'"sha256":"') + 12
        out[at] = ord("0") if out[at] != ord("0") else ord("1")
    return bytes(out)


@pytest.mark.parametrize("kind", ["nan", "random", "bit", "checksum"])
def test_damaged_entries_are_misses(tmp_path, kind):
    path, embedding = _entry(tmp_path)
    assert torch.equal(load_cached_embedding(path, "a prompt", 512, 32), embedding)
    path.write_bytes(_damage(path.read_bytes(), kind))
    assert load_cached_embedding(path, "a prompt", 512, 32) is None


def test_wrong_width_old_format_and_wrong_kind_are_misses(tmp_path):
    from safetensors.torch import save_file

    path, _ = _entry(tmp_path, width=16)
    assert load_cached_embedding(path, "a prompt", 512, 16) is not None
    assert load_cached_embedding(path, "a prompt", 512, 32) is None  # another encoder's width
    old = tmp_path / "old.safetensors"  # an entry of the first format: no checksum
    save_file({"embedding": torch.ones(3, 32)}, str(old), metadata={"prompt": "a prompt", "max_length": "512",
                                                                     "version": "1"})
    assert load_cached_embedding(old, "a prompt", 512, 32) is None
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    assert load_cached_embedding(folder, "a prompt", 512, 32) is None
    link = tmp_path / "link.safetensors"
    link.symlink_to(path)
    assert load_cached_embedding(link, "a prompt", 512, 16) is None


def test_misses_are_reencoded_and_rewritten_in_place(tiny_text_encoder_files, tmp_path):
    encoder_file, _ = tiny_text_encoder_files
    prompts = ["a prompt", "another prompt"]
    first, _ = encode_prompts_cached(encoder_file, prompts, tmp_path, device="cpu")
    paths = sorted(tmp_path.glob("*.safetensors"))
    paths[0].write_bytes(_damage(paths[0].read_bytes(), "nan"))
    paths[1].unlink()
    paths[1].mkdir()
    (paths[1] / "inside").write_text("x")  # a directory in an entry's place, not even empty
    calls = []
    again, stats = encode_prompts_cached(encoder_file, prompts, tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats == {"hits": 0, "misses": 2, "loaded": True}
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-6)
    assert all(p.is_file() for p in paths) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    _, stats = encode_prompts_cached(encoder_file, prompts, tmp_path, device="cpu", load=_counting_loader(calls))
    assert stats["hits"] == 2 and len(calls) == 1


def test_a_non_finite_embedding_is_never_stored_and_the_folder_must_be_a_folder(tmp_path):
    from wan_egoexo.errors import NonFiniteError

    bad = torch.zeros(512, 8)
    bad[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="text encoder produced NaN/Inf"):
        save_cached_embedding(tmp_path / "x.safetensors", bad, "p")
    assert not list(tmp_path.iterdir())
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        encode_prompts_cached(tmp_path / "missing.safetensors", ["x"], not_a_folder)
