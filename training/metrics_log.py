"""Training metrics: one JSON line per logged step in ``<output_dir>/metrics.jsonl`` (always), and
TensorBoard event files in ``<output_dir>/tensorboard`` when the tensorboard package is installed.
Only the main process writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from wan_egoexo.errors import InputError


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


class MetricsLog:
    """``resumed_from``: the step a resumed run starts after; lines logged after it by the interrupted
    run are dropped, so the file holds each step once."""

    def __init__(self, output_dir, enabled: bool, tensorboard: str = "auto", resumed_from: int | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._file = None
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                kept = [r for r in read_metrics(self.path) if resumed_from is not None and r["step"] <= resumed_from]
                self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self._file = open(self.path, "a", encoding="utf-8")
            self._writer = _tensorboard_writer(Path(output_dir) / "tensorboard", tensorboard)

    @property
    def tensorboard(self) -> bool:
        return self._writer is not None

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3), **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"train/{key}", float(value), int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
