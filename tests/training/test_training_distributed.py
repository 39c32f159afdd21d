"""Data-parallel training through the real command line under torchrun: two gloo processes on the
CPU end with identical LoRA weights (each rank's checksum is recorded at every save and checked here
against the saved tensors), and FSDP ends where DDP does."""

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from wan_egoexo_training.run.checkpoints import latest_checkpoint, read_checkpoint_state

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_train(tiny_root: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "wan_egoexo_training.train",
               "--config", str(REPO / "training" / "configs" / "exo2ego.yaml"),
               "--device", "cpu", "--output_dir", str(output), "--model.models_dir", str(tiny_root / "models"),
               "--data.cache", str(tiny_root / "cache"), "--data.num_frames", "9", "--data.height", "64",
               "--data.width", "64", "--data.resize_long", "64", "--data.num_workers", "0", "--lora.rank", "4",
               "--lora.alpha", "4", "--optim.lr", "1e-2", "--optim.warmup_steps", "0", "--train.max_steps", "4",
               "--train.batch_size", "1", "--train.mixed_precision", "no", "--checkpoint.every", "2",
               "--logging.progress_bar", "false", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def checksum(lora: dict) -> str:
    """sha256 over the tensors in name order (name bytes, then float32 bytes), computed here from the file."""
    digest = hashlib.sha256()
    for name in sorted(lora):
        digest.update(name.encode())
        digest.update(lora[name].to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_two_gloo_processes_end_with_identical_weights(tiny_root, tmp_path):
    done = torchrun_train(tiny_root, tmp_path / "ddp")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = read_checkpoint_state(latest_checkpoint(tmp_path / "ddp"))
    assert state["step"] == 4 and state["world_size"] == 2 and state["samples_seen"] == 8
    assert len(state["rank_checksums"]) == 2
    assert state["rank_checksums"][0] == state["rank_checksums"][1] == checksum(state["lora"])
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])
    trained_up = [v for k, v in state["lora"].items() if ".lora_B." in k]
    assert all(v.abs().max() > 0 for v in trained_up)  # B starts at 0: every LoRA was trained
    assert (tmp_path / "ddp" / "lora_final.safetensors").is_file()

    fsdp = torchrun_train(tiny_root, tmp_path / "fsdp", "--distributed.strategy", "fsdp")
    assert fsdp.returncode == 0, fsdp.stdout[-3000:] + fsdp.stderr[-3000:]
    sharded = read_checkpoint_state(latest_checkpoint(tmp_path / "fsdp"))
    for key, value in state["lora"].items():
        torch.testing.assert_close(sharded["lora"][key], value, rtol=1e-5, atol=1e-6)


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    """"cuda" (or auto) without an index means the GPU of this process's LOCAL_RANK; an index is kept."""
    from wan_egoexo_training.run.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert init_distributed("cuda").device == torch.device("cuda", 1)
    assert init_distributed("auto").device == torch.device("cuda", 1)
    assert init_distributed("cuda:0").device == torch.device("cuda", 0)
