"""Running a measuring worker (native_worker.py, windows_worker.py) in a process of its own, over a
scratch copy of the host, and reading back the JSON it writes; a failed worker fails the test with
its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .server import copy_comfyui


def measure_in_worker(worker: Path, comfy_path, work: Path) -> dict:
    comfy_dir = copy_comfyui(comfy_path, work / "ComfyUI")
    out = work / "measured.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([sys.executable, str(worker), str(comfy_dir), str(work), str(out)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"{worker.name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-12000:]}")
    return json.loads(out.read_text())
