"""Safe reading of PyTorch zip checkpoints: tensors come back exactly, pickled code never runs."""

import os
import shlex
from pathlib import Path

import pytest
import torch

from wan_egoexo.errors import ModelFileError
from wan_egoexo.lora.safe_checkpoint import load_checkpoint_tensors
from wan_egoexo.tiny.lora import random_lora_state_dict, save_worldwander_ckpt


def _write_marker(path):
    Path(path).write_text("code ran")
    return {}


class _Payload:
    """Pickles as 'call fn(*args)': what a malicious checkpoint does."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _small_lora(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.attn1.to_q.lora_A.default.weight": torch.randn(4, 16, generator=gen),
        "blocks.0.attn1.to_q.lora_B.default.weight": torch.randn(16, 4, generator=gen),
    }


def test_worldwander_ckpt_round_trip_where_weights_only_refuses(tmp_path, tiny_transformer):
    state = random_lora_state_dict(tiny_transformer, rank=4, seed=3)
    path = save_worldwander_ckpt(state, tmp_path / "wan2-2_lora_three2one_synthetic.ckpt")
    # The Lightning-like file holds a non-allowlisted object, so torch's safe mode refuses it whole.
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    tensors = load_checkpoint_tensors(path)
    expected = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                for k, v in state.items()}
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        assert tensors[key].dtype == value.dtype and torch.equal(tensors[key], value), key


def test_malicious_checkpoint_never_runs_code(tmp_path):
    marker_fn, marker_sys = tmp_path / "marker_fn", tmp_path / "marker_sys"
    lora = _small_lora()
    evil_lora = dict(lora)
    evil_lora["blocks.0.attn1.to_k.lora_A.default.weight"] = _Payload(_write_marker, (str(marker_fn),))
    checkpoint = {
        "state_dict": {"lora": evil_lora},
        "hyper_parameters": _Payload(_write_marker, (str(marker_fn),)),
        "callbacks": {"x": _Payload(os.system, (f"touch {shlex.quote(str(marker_sys))}",))},
    }
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)

    # The payload is live: an ordinary unpickling runs both.
    torch.load(path, weights_only=False)
    assert marker_fn.exists() and marker_sys.exists()
    marker_fn.unlink()
    marker_sys.unlink()

    tensors = load_checkpoint_tensors(path)
    assert not marker_fn.exists() and not marker_sys.exists()
    assert set(tensors) == set(lora)
    for key in lora:
        assert torch.equal(tensors[key], lora[key])


def test_views_shared_storages_and_dtypes_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(8, 6, generator=gen)
    tensors = {
        "a.lora_A.weight": big[:4],  # two views of one storage
        "a.lora_B.weight": big[4:, 1:5].t(),  # offset, strided, transposed
        "b.lora_A.weight": torch.randn(3, 5, generator=gen).to(torch.bfloat16),
        "b.lora_B.weight": torch.randn(5, 3, generator=gen).to(torch.float8_e4m3fn),  # _rebuild_tensor_v3
        "b.alpha": torch.tensor(2.0, dtype=torch.float16),
        "d.lora_A.weight": torch.arange(12).reshape(3, 4).to(torch.uint16)[1:],  # v3, 2-byte, offset
        "c.lora_A.weight": torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
    }
    path = tmp_path / "views.pt"
    torch.save({"state_dict": tensors}, path)
    loaded = load_checkpoint_tensors(path)
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert torch.equal(loaded[key].float(), value.detach().float()), key


def test_only_lora_tensors_of_a_plain_state_dict_are_returned(tmp_path):
    lora = {"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 3),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.ones(3, 2),
            "transformer.blocks.0.attn1.to_q.alpha": torch.tensor(4.0)}
    path = tmp_path / "plain.pth"
    torch.save({**lora, "transformer.blocks.0.attn1.to_q.weight": torch.zeros(3, 3), "step": 7}, path)
    assert set(load_checkpoint_tensors(path)) == set(lora)


def test_not_a_zip_checkpoint(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ModelFileError, match="not a zip-format PyTorch checkpoint") as info:
        load_checkpoint_tensors(path)
    assert str(path) in str(info.value)


def test_legacy_torch_save_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(_small_lora(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="legacy") as info:
        load_checkpoint_tensors(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"lora": _small_lora()}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as info:
        load_checkpoint_tensors(path)
    assert str(path) in str(info.value)


def test_checkpoint_without_lora_tensors(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, "epoch": 1}, path)
    with pytest.raises(ModelFileError, match="no LoRA tensors") as info:
        load_checkpoint_tensors(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_checkpoint_tensors(tmp_path / "absent.ckpt")
