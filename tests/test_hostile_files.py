"""Issue 11's and issue 18's hostile model files: each is refused with a named error that gives the file and the
rule, at a cost that follows its size (peak resident memory measured around each read)."""

import json
import pickle
import time
import zipfile

import pytest
import torch

from benchmarks import hostile_files as hostile
from benchmarks import hostile_lora_files as lora18
from benchmarks.common import peak_memory
from wan_egoexo.errors import ModelFileError
from wan_egoexo.lora import read_lora_file
from wan_egoexo.lora.layouts import check_lora_file
from wan_egoexo.lora.safe_checkpoint import load_checkpoint_tensors
from wan_egoexo.models.transformer_loader import load_transformer

MEMORY_BOUND = 64 << 20  # peak growth allowed for reading any of these sub-MB files


def _refused(path, reader, *fragments):
    with peak_memory("cpu", collect=False) as memory:
        start = time.perf_counter()
        with pytest.raises(ModelFileError) as info:
            reader(path)
        seconds = time.perf_counter() - start
    message = str(info.value)
    assert str(path) in message and all(f in message for f in fragments), message
    assert memory["kind"] != "cpu_peak_rss" or memory["delta_bytes"] < MEMORY_BOUND, (memory, message)
    return message, seconds


@pytest.mark.parametrize("build, fragments", [
    (lambda d: hostile.stride0_ckpt(d / "s0.ckpt", 2), ("larger than its storage", "stride 0")),
    (lambda d: hostile.stride0_ckpt(d / "s16.ckpt", 16), ("larger than its storage",)),
    (lambda d: hostile.global_flood_ckpt(d / "g.ckpt", 20_000, distinct=True), ("more than 10,000 different globals",)),
    (lambda d: hostile.memo_index_ckpt(d / "m.ckpt"), ("memo slot 268,435,456 after 3 opcodes",)),
    (lambda d: hostile.huge_member_ckpt(d / "z.ckpt", 3), ("claims 3,221,225,472 bytes", "lying or truncated")),
    (lambda d: hostile.encrypted_member_ckpt(d / "e.ckpt"), ("is encrypted",)),
    (lambda d: hostile.ppmd_member_ckpt(d / "p.ckpt"), ("compressed with PPMd",)),
    (lambda d: hostile.subbyte_dtype_ckpt(d / "u4.ckpt"), ("torch.uint4", "sub-byte")),
    (lambda d: hostile.subbyte_dtype_ckpt(d / "q.ckpt", torch.quint4x2), ("torch.quint4x2",)),
    (lambda d: hostile.unknown_dtype_safetensors(d / "q.safetensors"), ("'Q4_K'", "does not read")),
    (lambda d: hostile.overlapping_offsets_safetensors(d / "o.safetensors"), ("overlaps",)),
    (lambda d: hostile.reversed_offsets_safetensors(d / "r.safetensors"), ("data_offsets [16, 0]",)),
    (lambda d: hostile.shape_offset_mismatch_safetensors(d / "x.safetensors"), ("needs 4,398,046,511,104 bytes",)),
    (lambda d: hostile.huge_header_safetensors(d / "h.safetensors", 33), ("header", "at most 33,554,432")),
], ids=["stride0-2GiB", "stride0-16GiB", "distinct-globals", "memo-slot", "zip-3GiB", "encrypted", "ppmd", "uint4",
        "quint4x2", "st-dtype", "st-overlap", "st-reversed", "st-shape", "st-header"])
def test_hostile_lora_files_are_refused_by_rule(tmp_path, build, fragments):
    _refused(build(tmp_path), read_lora_file, *fragments)


def test_million_global_flood_is_read_in_bounded_time_and_memory(tmp_path):
    """The file is otherwise a valid LoRA: the flood costs opcodes, not a class per opcode."""
    path = hostile.global_flood_ckpt(tmp_path / "flood.ckpt", 1_000_000)
    with peak_memory("cpu", collect=False) as memory:
        tensors = load_checkpoint_tensors(path)
    assert torch.equal(tensors[hostile.LORA_KEY], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert memory["kind"] != "cpu_peak_rss" or memory["delta_bytes"] < 4 * MEMORY_BOUND  # 14 MB pickle, 1M list


def test_a_transformer_with_one_wrong_shape_names_the_file_and_the_tensor(tmp_path):
    path = hostile.wrong_shape_transformer_file(tmp_path)
    message, _ = _refused(path, lambda p: load_transformer(p, device="cpu"), "wrong shape", "blocks.1.self_attn.q.weight",
                          "(257, 256)", "(256, 256)")
    assert len(message.splitlines()) == 1


def test_a_deflated_record_may_not_claim_more_than_deflate_can_produce(tmp_path):
    _refused(hostile.deflate_bomb_ckpt(tmp_path / "bomb.ckpt", 1), read_lora_file, "claims 1,073,741,824 bytes",
             "more than they can hold")


def test_a_real_sized_worldwander_checkpoint_still_loads(tmp_path):
    """600 LoRA tensors and the Adam state of each, as the released Lightning checkpoints hold."""
    from wan_egoexo.tiny.lora import save_worldwander_ckpt

    state = {f"blocks.{b}.attn1.to_{m}.lora_{h}.weight": torch.randn(2, 2)
             for b in range(30) for m in "qkvo" for h in "AB"}
    path = save_worldwander_ckpt(state, tmp_path / "big.ckpt")
    tensors = load_checkpoint_tensors(path)
    assert len(tensors) == len(state)
    for key, value in state.items():
        assert torch.equal(tensors[key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")],
                           value)


def test_the_benchmarks_run_in_fast_mode(tmp_path):
    """The before/after measurements cannot rot (the numbers are not checked: CI machines are noisy)."""
    import json

    from benchmarks import bench_hostile_files

    bench_hostile_files.main(["--fast", "--json", str(tmp_path / "files.json")])
    rows = json.loads((tmp_path / "files.json").read_text())["results"]
    assert [r["outcome"] for r in rows] == ["ModelFileError", "ModelFileError"]
    assert all(r["peak_growth_mib"] < 64 for r in rows)
    # bench_hostile_runs --fast: tests/test_benchmarks_fast.py::test_bench_hostile_runs_fast


# ------------------------------------------------------------------ issue 18

@pytest.mark.parametrize("build, fragments", [
    (lambda d: lora18.redos_alpha_pattern_safetensors(d / "re.safetensors"),
     ("alpha_pattern has the key '((.*)*)*Z', which is not a module name", "regular expressions are not evaluated")),
    (lambda d: lora18.huge_alpha_safetensors(d / "ha.safetensors"), ("lora_alpha is 1000", "a finite number")),
    (lambda d: lora18.huge_dims_safetensors(d / "hd.safetensors"), ("-bit integer>", "integers below 2**63")),
    (lambda d: lora18.colliding_dict_ckpt(d / "cd.ckpt"), ("integer of 62 bits", "hash alike")),
    (lambda d: lora18.colliding_set_ckpt(d / "cs.ckpt"), ("integer of 62 bits", "hash alike")),
    (lambda d: lora18.colliding_memo_ckpt(d / "cm.ckpt"), ("memo slot 2,305,843,009,213,693,952 after 4 opcodes",)),
    (lambda d: lora18.colliding_tuple_keys_ckpt(d / "ct.ckpt"), ("tuple holding something other than strings",)),
    (lambda d: lora18.hex_int_offset_ckpt(d / "hx.ckpt"), ("text integer of 5,002 characters",)),
    (lambda d: lora18.inflating_ckpt(d / "inf.ckpt", 64), ("inflates to 67,108,864 bytes", "at most 4 times")),
    (lambda d: lora18.empty_file(d / "empty.ckpt"), ("is empty (0 bytes)",)),
    (lambda d: lora18.empty_file(d / "empty.safetensors"), ("is empty (0 bytes)",)),
    (lambda d: hostile.write_safetensors_raw(d / "short.ckpt", {}, header_bytes=b"")
     , ("is not a zip-format PyTorch checkpoint",)),
], ids=["redos", "alpha-4000-digits", "dims-4299-digits", "dict-collisions", "set-collisions", "memo-collisions",
        "int-pair-keys", "hex-int", "inflation", "empty-ckpt", "empty-safetensors", "short-ckpt"])
def test_issue18_lora_files_are_refused_by_rule_in_preflight_and_on_read(tmp_path, build, fragments):
    path = build(tmp_path)
    message, _ = _refused(path, read_lora_file, *fragments)
    assert "too short to be a safetensors file" not in message
    assert _refused(path, check_lora_file, *fragments)[0] == message  # the preflight check says the same


def test_colliding_int_keys_are_refused_at_the_first_one(tmp_path):
    """The family is killed by the bound, not by a count: its first member is already outside it."""
    from wan_egoexo.lora.bounded_unpickler import PickleRefused, load_bounded
    from wan_egoexo.lora.pickle_opcodes import INT_KEY_LIMIT

    first = lora18.colliding_keys(2)[1]
    assert hash(first) == hash(1) and abs(first) >= INT_KEY_LIMIT
    with pytest.raises(PickleRefused, match="integer of 62 bits"):
        load_bounded(b"\x80\x02}(" + lora18._long1(first) + b"Nu.", lambda m, n: None, lambda pid: pid)
    # inside the bound every key hashes to itself (-1 shares -2's hash): no two collide
    inside = [0, 1, -2, 2**61 - 2, -(2**61 - 2), 2**40 + 7]
    assert all(hash(k) == k for k in inside)
    keys = {k: None for k in inside}
    assert load_bounded(pickle.dumps(keys, protocol=2), lambda m, n: None, lambda pid: pid) == keys


def test_an_honestly_inflating_chain_is_refused_file_by_file(tmp_path):
    """Four files each inflating 64 MiB are each refused before inflating (no memory is taken)."""
    paths = [lora18.inflating_ckpt(tmp_path / f"inf{i}.ckpt", 64) for i in range(4)]
    with peak_memory("cpu", collect=False) as memory:
        for path in paths:
            with pytest.raises(ModelFileError, match="at most 4 times its size"):
                read_lora_file(path)
    assert memory["kind"] != "cpu_peak_rss" or memory["delta_bytes"] < MEMORY_BOUND


def test_a_deflated_checkpoint_within_the_budget_still_loads(tmp_path):
    """A real checkpoint whose records were deflated (about 1.1:1 for random weights) reads as stored."""
    from wan_egoexo.tiny.lora import save_worldwander_ckpt

    state = {f"blocks.0.attn1.to_{m}.lora_{h}.weight": torch.randn(4, 64) for m in "qk" for h in "AB"}
    stored = save_worldwander_ckpt(state, tmp_path / "stored.ckpt")
    deflated = tmp_path / "deflated.ckpt"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert deflated.stat().st_size < stored.stat().st_size
    expected, got = load_checkpoint_tensors(stored), load_checkpoint_tensors(deflated)
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_safetensors_lora_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """One safetensors file in 256 has a header length whose low byte is 0x80, a pickle's first byte."""
    entry = {"dtype": "F32", "shape": [1, 1]}
    header = {"a.lora_A.weight": {**entry, "data_offsets": [0, 4]},
              "a.lora_B.weight": {**entry, "data_offsets": [4, 8]}}
    raw = json.dumps(header).encode()
    raw += b" " * (0x180 - len(raw))
    path = hostile.write_safetensors_raw(tmp_path / "x80.safetensors", {}, b"\0" * 8, header_bytes=raw)
    assert path.read_bytes()[:1] == b"\x80"
    assert set(read_lora_file(path).modules) == set(check_lora_file(path).modules) == {"a"}
