"""Training metrics: one JSON line per logged step in ``<output_dir>/metrics.jsonl`` (always), one line
per held-out pair and validation in ``<output_dir>/validation/metrics.jsonl`` (beside the videos), and
TensorBoard event files in ``<output_dir>/tensorboard`` when the tensorboard package is installed.
Only the main process writes.

The files are strict JSON: a NaN or infinite value is written as null (a stopped run's last loss, the
PSNR of identical frames), never as the bare NaN / Infinity that JSON readers reject.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from wan_egoexo.atomic_files import disk_errors
from wan_egoexo.errors import InputError

METRICS_FILE = "metrics.jsonl"
VALIDATION_FOLDER = "validation"


def json_safe(value):
    """``value`` with every non-finite float replaced by None (recursively through dicts and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _tensorboard_writer(folder: Path, mode: str):
    if mode == "off":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
    except ImportError:
        if mode == "on":
            raise InputError("logging.tensorboard: 'on' but the tensorboard package is not installed; "
                             "expected `pip install tensorboard`, or 'auto' / 'off'.") from None
        return None
    return SummaryWriter(log_dir=str(folder))


class JsonlFile:
    """An append-only JSON-lines file, opened on the first record. ``resumed_from``: lines of steps after
    it (written by an interrupted run) are dropped, so the file holds each step once; a fresh run
    (None) starts the file over."""

    def __init__(self, path: Path, resumed_from: int | None):
        self.path = Path(path)
        self._file = None
        if self.path.is_file():
            lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]  # lenient
            kept = [r for r in lines if resumed_from is not None and r.get("step", 0) <= resumed_from]
            self.path.write_text("".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        with disk_errors(self.path):  # a full or read-only disk is a WriteError naming the file
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MetricsLog:
    """``log(step, values)`` for training steps, ``log_validation(step, rows)`` for validation results."""

    def __init__(self, output_dir, enabled: bool, tensorboard: str = "auto", resumed_from: int | None = None):
        self.enabled = enabled
        output_dir = Path(output_dir)
        self.path = output_dir / METRICS_FILE
        self.validation_path = output_dir / VALIDATION_FOLDER / METRICS_FILE
        self._train = self._validation = self._writer = None
        if enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            self._train = JsonlFile(self.path, resumed_from)
            self._validation = JsonlFile(self.validation_path, resumed_from)
            self._writer = _tensorboard_writer(output_dir / "tensorboard", tensorboard)

    @property
    def tensorboard(self) -> bool:
        return self._writer is not None

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._train.write({"step": int(step), "time": round(time.time(), 3), **{k: float(v) for k, v in values.items()}})
        if self._writer is not None:
            for key, value in values.items():
                if math.isfinite(float(value)):
                    self._writer.add_scalar(f"train/{key}", float(value), int(step))

    def log_validation(self, step: int, rows: list[dict], means: dict[str, float]) -> None:
        """``rows``: one dict per pair ({"stem", "video", metric: value ...}); ``means``: metric -> mean."""
        if not self.enabled:
            return
        for row in rows:
            self._validation.write({"step": int(step), **row})
        if self._writer is not None:
            for key, value in means.items():
                if math.isfinite(value):
                    self._writer.add_scalar(f"val/{key}", value, int(step))

    def close(self) -> None:
        for part in (self._train, self._validation):
            if part is not None:
                part.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path) -> list[dict]:
    """The records of a metrics file; strict JSON (NaN / Infinity are refused)."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in Path(path).read_text().splitlines() if line.strip()]
