"""Issue 11's hostile model files: each is refused with a named error that gives the file and the
rule, at a cost that follows its size (peak resident memory measured around each read)."""

import time

import pytest
import torch

from benchmarks import hostile_files as hostile
from benchmarks.common import peak_memory
from wan_egoexo.errors import ModelFileError
from wan_egoexo.lora import read_lora_file
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
    (lambda d: hostile.memo_index_ckpt(d / "m.ckpt"), ("no LoRA tensors",)),
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

    from benchmarks import bench_hostile_files, bench_hostile_runs

    bench_hostile_files.main(["--fast", "--json", str(tmp_path / "files.json")])
    rows = json.loads((tmp_path / "files.json").read_text())["results"]
    assert [r["outcome"] for r in rows] == ["ModelFileError", "ModelFileError"]
    assert all(r["peak_growth_mib"] < 64 for r in rows)
    bench_hostile_runs.main(["--fast", "--json", str(tmp_path / "runs.json")])
    strength, kill9 = json.loads((tmp_path / "runs.json").read_text())["results"]
    assert strength["exit"] == 2 and not strength["written"]  # refused while the command line is parsed
    assert "argument --lora-strength: '1e30' is invalid; expected a finite number from -100.0 to 100.0" \
        in strength["message"]
    assert kill9["after_kill"] and kill9["leftovers"] == []
