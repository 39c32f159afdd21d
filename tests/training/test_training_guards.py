"""A run guards its outputs: it stops at the first non-finite loss (learning rate 1e12) keeping the last
good checkpoint and strict-JSON metrics; one run per output folder (a second fails at once naming the
holder; a dead holder's lock is taken over); outputs default outside the checkout; expected warnings
are said once."""

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wan_egoexo_training.run.checkpoints import list_checkpoints
from wan_egoexo_training.config import load_config
from wan_egoexo_training.run.expected_warnings import training_warnings
from wan_egoexo_training.run.loop import FINAL_LORA, LOCK_FILE, train
from wan_egoexo_training.run.metrics_log import MetricsLog, read_metrics
from wan_egoexo_training.step.numeric_guard import NonFiniteTrainingError
from wan_egoexo_training.run.output_lock import FolderInUseError, FolderLock, _alive_here

REPO = Path(__file__).resolve().parents[2]


def test_a_diverging_run_stops_at_the_first_non_finite_step(make_config, tiny_root, tmp_path):
    config = make_config(tmp_path / "diverge", data={"cache": str(tiny_root / "cache")},
                         optim={"lr": 1e12, "warmup_steps": 2}, train={"max_steps": 12},
                         checkpoint={"every": 1, "keep_last": 20})
    with pytest.raises(NonFiniteTrainingError) as raised:
        train(config)
    message = str(raised.value)
    step = int(message.split(":", 1)[0].removeprefix("step "))
    assert 2 < step < 12, message  # step 1 runs at lr 0 (warm-up), step 2 blows the weights up
    assert "the loss is nan" in message and "Likely cause: the learning rate: optim.lr 1e+12" in message
    saved = list_checkpoints(config.output_dir)
    assert [int(p.name[5:]) for p in saved] == list(range(1, step))  # nothing of the failed step
    assert f"the last good checkpoint is {saved[-1]}" in message
    for folder in saved:
        assert all(torch.isfinite(t).all() for t in load_file(folder / "lora.safetensors").values()), folder
    assert not (Path(config.output_dir) / FINAL_LORA).exists()
    records = read_metrics(Path(config.output_dir) / "metrics.jsonl")  # strict: NaN would not parse
    assert [r["step"] for r in records] == list(range(1, step + 1))
    assert records[-1]["loss"] is None and records[-1]["grad_norm"] is None
    assert all(math.isfinite(r["loss"]) for r in records[:-1])


def test_metrics_files_are_strict_json(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, tensorboard="off")
    log.log(1, {"loss": float("nan"), "lr": float("inf"), "grad_norm": 1.5})
    log.log_validation(1, [{"stem": "a", "video": "a.mp4", "psnr": float("inf"), "ssim": 1.0}], {"psnr": float("inf")})
    log.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_metrics(tmp_path / "metrics.jsonl")[0] | {"time": 0} == {
        "step": 1, "time": 0, "loss": None, "lr": None, "grad_norm": 1.5}
    assert read_metrics(tmp_path / "validation" / "metrics.jsonl") == [
        {"step": 1, "stem": "a", "video": "a.mp4", "psnr": None, "ssim": 1.0}]
    (tmp_path / "bad.jsonl").write_text('{"loss": NaN}\n')
    with pytest.raises(ValueError, match="NaN is not JSON"):
        read_metrics(tmp_path / "bad.jsonl")


def _hold_lock(lock_file: Path) -> subprocess.Popen:
    """Another process holding the lock until killed."""
    code = ("import sys; from wan_egoexo_training.run.output_lock import FolderLock; "
            f"FolderLock({str(lock_file)!r}, 'test').acquire(); print('ready', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_second_run_on_the_same_output_folder_fails_at_once_naming_the_holder(make_config, tmp_path):
    output = tmp_path / "busy"
    holder = _hold_lock(output / LOCK_FILE)
    try:
        # models_dir does not exist: the lock is checked before anything is loaded or read
        config = make_config(output, model={"models_dir": str(tmp_path / "no-models")})
        started = time.perf_counter()
        with pytest.raises(FolderInUseError) as raised:
            train(config)
        assert time.perf_counter() - started < 5.0
        message = str(raised.value)
        record = json.loads((output / LOCK_FILE).read_text())
        assert f"output_dir {output} is in use by another run: pid {holder.pid} on host {socket.gethostname()}" in message
        assert f"started {record['started']}" in message and str(output / LOCK_FILE) in message
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (-9): its lock file stays, but the lock died with it and is taken over
    assert (output / LOCK_FILE).is_file()
    with FolderLock(output / LOCK_FILE, "output_dir") as lock:
        assert lock.previous["pid"] == holder.pid
        assert json.loads((output / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (output / LOCK_FILE).exists()  # released and removed


def test_where_locks_are_unsupported_a_dead_holders_record_is_stale():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    assert not _alive_here({"pid": dead.pid, "host": host})
    assert _alive_here({"pid": os.getppid(), "host": host})
    assert not _alive_here({"pid": os.getppid(), "host": host + "-elsewhere"})  # cannot tell: not held


def test_outputs_default_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, task in (("exo2ego", "exo2ego"), ("ego2exo.yaml", "ego2exo")):
        config = load_config(name)  # a bundled config by name, from any folder
        assert config.task == task
        assert Path(config.output_dir) == tmp_path / "home" / "worldwander-training" / task
    assert load_config(overrides={"output_dir": "~/runs/a"}).output_dir == str(tmp_path / "home" / "runs" / "a")


def test_a_run_that_fails_early_leaves_no_output_folder(make_config, tmp_path):
    from wan_egoexo_training.data.dataset_checks import DatasetError
    from wan_egoexo_training.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", pairs=1, frames=12, size=64)
    with pytest.raises(DatasetError):
        train(make_config(tmp_path / "never", data={"root": str(root)}))
    assert not (tmp_path / "never").exists()


def test_expected_warnings_are_said_once(capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with training_warnings(torch.device("cpu"), "bf16"):
            for _ in range(5):
                warnings.warn("Mismatch dtype between input and weight: input dtype = c10::BFloat16, weight dtype = "
                              "float, Cannot dispatch to fused implementation.", UserWarning)
                warnings.warn("something else", UserWarning)
                warnings.simplefilter("default", DeprecationWarning)  # libraries touching the filters every step
    assert [str(w.message) for w in seen] == ["something else"]
    assert capsys.readouterr().err.count("bf16 autocast on the CPU") == 1
    with training_warnings(torch.device("cpu"), "no"):
        pass
    assert capsys.readouterr().err == ""
