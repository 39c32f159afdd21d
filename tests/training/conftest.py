"""Fixtures for the training tests: tiny real-layout model files, a synthetic ego/exo dataset (moving
shapes filmed by a fixed exo camera and an ego camera riding on the "person"), a latent cache made
from it, and a helper building small CPU configs (64x64, 9 frames, rank 4)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from wan_egoexo_training.config import load_config
from wan_egoexo_training.data.synthetic import write_synthetic_dataset


def tiny_overrides(root: Path, output: Path, **sections) -> dict:
    """Overrides for a fast CPU run on the tiny fixture; ``sections`` are merged per section."""
    base = {
        "output_dir": str(output),
        "device": "cpu",
        "seed": 7,
        "model": {"models_dir": str(root / "models")},
        "data": {"root": str(root / "data"), "num_frames": 9, "frame_stride": 2, "height": 64, "width": 64,
                 "resize_long": 64, "num_workers": 0, "check_workers": 2},
        "lora": {"rank": 4, "alpha": 4},
        "optim": {"lr": 1e-2, "warmup_steps": 2},
        "train": {"max_steps": 20, "batch_size": 2, "mixed_precision": "no", "prompt_dropout": 0.1},
        "checkpoint": {"every": 10, "keep_last": 3},
        "logging": {"progress_bar": False, "tensorboard": "off"},
        "prepare": {"windows": 4},
    }
    merged = copy.deepcopy(base)
    for key, value in sections.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """models/ (tiny transformer, VAE, UMT5 under the real names), data/ (3 pairs, 18 frames, 64x64,
    references: 9 frames at stride 2 fit at starts 0 and 1), cache/ (prepared from data/: both windows
    of each clip)."""
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder

    from wan_egoexo_training.prepare import prepare_cache

    root = tmp_path_factory.mktemp("training")
    build_tiny_models_folder(root / "models", tasks=("exo2ego",))
    write_synthetic_dataset(root / "data", pairs=3, frames=18, size=64)
    prepare_cache(load_config(overrides=tiny_overrides(root, root / "unused", data={"cache": str(root / "cache")})))
    return root


@pytest.fixture(scope="session")
def config_for(tiny_root):
    """config_for(output_dir, **sections) -> a validated TrainingConfig (any fixture scope)."""
    return lambda output, **sections: load_config(overrides=tiny_overrides(tiny_root, output, **sections))


@pytest.fixture
def make_config(tiny_root, tmp_path):
    """make_config(**sections) -> a validated TrainingConfig writing into a fresh folder."""
    def build(output: Path | None = None, **sections):
        return load_config(overrides=tiny_overrides(tiny_root, output or tmp_path / "run", **sections))
    return build
