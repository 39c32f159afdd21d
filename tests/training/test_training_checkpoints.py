"""Checkpoint folders: atomic (a crash in the middle of a save, even a hard one, leaves the previous
checkpoint loadable), the last K kept, resume paths checked."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_egoexo_training.run import checkpoints
from wan_egoexo_training.run.checkpoints import (clean_interrupted_saves, latest_checkpoint, list_checkpoints, read_checkpoint_state,
                                  resolve_resume, save_checkpoint)
from wan_egoexo.errors import InputError
from wan_egoexo.lora import apply_lora
from wan_egoexo.tiny.lora import random_lora_state_dict
from wan_egoexo.tiny.transformer import build_tiny_transformer

REPO = Path(__file__).resolve().parents[2]

CRASHING_SAVE = """
import os, sys, torch
from wan_egoexo_training.run import checkpoints
from wan_egoexo.tiny.lora import random_lora_state_dict
from wan_egoexo.tiny.transformer import build_tiny_transformer
out = sys.argv[1]
lora = random_lora_state_dict(build_tiny_transformer(0), rank=4)
checkpoints.save_checkpoint(out, 5, {"step": 5}, lora, 4, 4.0, "fp32", "config", keep_last=3)
def crash(obj, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"PK\\x03\\x04 the first bytes of a zip")
    os._exit(3)  # a hard crash in the middle of the save: no handler, no cleanup runs
checkpoints.torch.save = crash
checkpoints.save_checkpoint(out, 10, {"step": 10}, lora, 4, 4.0, "fp32", "config", keep_last=3)
"""


def _lora():
    return random_lora_state_dict(build_tiny_transformer(0), rank=4)


def test_hard_crash_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", CRASHING_SAVE, str(out)], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 3, done.stderr
    assert [p.name for p in list_checkpoints(out)] == ["step-00000005"]
    assert latest_checkpoint(out).name == "step-00000005" == resolve_resume(out, "auto").name
    assert read_checkpoint_state(latest_checkpoint(out))["step"] == 5
    apply_lora(build_tiny_transformer(0), latest_checkpoint(out) / "lora.safetensors")
    leftovers = [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".partial")]
    assert len(leftovers) == 1 and not (out / "checkpoints" / "step-00000010").exists()
    assert clean_interrupted_saves(out) == leftovers and not leftovers[0].exists()


def test_failed_save_changes_nothing(tmp_path, monkeypatch):
    lora = _lora()
    first = save_checkpoint(tmp_path, 5, {"step": 5}, lora, 4, 4.0, "fp32", "config", keep_last=3)
    before = sorted(p.name for p in first.iterdir())

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, 5, {"step": 5, "newer": True}, lora, 4, 4.0, "fp32", "config", keep_last=3)
    assert sorted(p.name for p in first.iterdir()) == before
    assert "newer" not in read_checkpoint_state(first)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]


def test_only_the_last_k_are_kept_and_state_round_trips(tmp_path):
    lora = _lora()
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path, step, {"step": step, "extra": torch.arange(3)}, lora, 4, 4.0, "bf16", "config",
                        keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    state = read_checkpoint_state(latest_checkpoint(tmp_path))
    assert state["step"] == 8 and torch.equal(state["extra"], torch.arange(3))
    assert all(torch.equal(state["lora"][k], v) for k, v in lora.items())


def test_resume_paths_are_checked(tmp_path):
    assert resolve_resume(tmp_path, "auto") is None and resolve_resume(tmp_path, "none") is None
    with pytest.raises(InputError, match="is not a checkpoint folder"):
        resolve_resume(tmp_path, str(tmp_path / "elsewhere"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "training_state.pt").write_bytes(b"garbage")
    with pytest.raises(Exception, match="training_state.pt"):
        read_checkpoint_state(tmp_path / "bad")
