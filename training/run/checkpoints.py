"""Checkpoints: ``<output_dir>/checkpoints/step-00000500/`` holding

- ``lora.safetensors``: the LoRA (loads in apply_lora, the ComfyUI nodes and ComfyUI's LoRA loader);
- ``training_state.pt``: everything an exact resume needs (LoRA in float32, optimizer, lr scheduler,
  every rank's RNG states, step, samples consumed), read back with ``weights_only=True``;
- ``config.yaml``: the resolved config of the run.

Each checkpoint folder is written under a temporary name and renamed when complete, so a crash
during a save leaves the previous checkpoints as they were; only the last ``keep_last`` are kept.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from wan_egoexo.errors import InputError, ModelFileError

from wan_egoexo.atomic_files import atomic_folder, remove_partials
from ..step.lora_training import save_lora_file

STATE_FILE = "training_state.pt"
LORA_FILE = "lora.safetensors"
CONFIG_FILE = "config.yaml"
STATE_FORMAT = "worldwander-training-state/1"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir, step: int) -> Path:
    return checkpoints_root(output_dir) / f"step-{step:08d}"


def list_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)
             and (p / STATE_FILE).is_file() and (p / LORA_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir, keep_last: int) -> list[Path]:
    removed = list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def clean_interrupted_saves(output_dir) -> list[Path]:
    """Remove the temporary folders of saves that never finished."""
    return remove_partials(checkpoints_root(output_dir))


def save_checkpoint(output_dir, step: int, state: dict, lora_state: dict, lora_rank: int, lora_alpha: float,
                    lora_dtype: str, config_text: str, keep_last: int) -> Path:
    """Write one checkpoint atomically, then drop the oldest beyond ``keep_last``. Returns its folder."""
    destination = checkpoint_path(output_dir, step)
    with atomic_folder(destination) as folder:
        save_lora_file(lora_state, folder / LORA_FILE, lora_rank, lora_alpha, lora_dtype)
        torch.save({"format": STATE_FORMAT, **state, "lora": lora_state}, folder / STATE_FILE)
        (folder / CONFIG_FILE).write_text(config_text)
    prune_checkpoints(output_dir, keep_last)
    return destination


def resolve_resume(output_dir, resume: str) -> Path | None:
    """The checkpoint folder to resume from: "auto" = the latest in output_dir (None if there is none),
    "none" = start fresh, else a checkpoint folder (or its training_state.pt)."""
    text = str(resume).strip()
    if text.lower() in ("none", "no", "off", "false", ""):
        return None
    if text.lower() == "auto":
        return latest_checkpoint(output_dir)
    path = Path(text).expanduser()
    if path.is_file() and path.name == STATE_FILE:
        path = path.parent
    if not (path / STATE_FILE).is_file():
        raise InputError(f"checkpoint.resume: {path} is not a checkpoint folder; expected a folder holding "
                         f"{STATE_FILE} (e.g. {checkpoint_path(output_dir, 500)}), 'auto' or 'none'.")
    return path


def read_checkpoint_state(folder) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise ModelFileError(path, f"cannot be read ({type(exc).__name__}: {exc}).",
                             "a training_state.pt written by this trainer") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ModelFileError(path, "is not a training state of this trainer.", f"format {STATE_FORMAT}")
    return state
