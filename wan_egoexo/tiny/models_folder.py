"""A ComfyUI-style models folder of tiny random models under the real file names, and a short
generated clip: what ``translate --demo`` and the end-to-end tests run on.

The files are written in the real layouts (original Wan transformer and VAE keys, fp8-scaled
UMT5 with its SentencePiece model inside, a Lightning .ckpt LoRA), so loading them exercises
exactly the code the real 5B files go through. The output of such a model is noise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..models.model_files import TEXT_ENCODER, TRANSFORMER, VAE, ModelFiles, lora_wanted
from ..in_context.tasks import get_task
from ..video.read_write import write_video
from .lora import random_lora_state_dict, save_worldwander_ckpt
from .text_encoder import build_tiny_umt5, save_umt5_fp8_scaled, train_tiny_spiece
from .transformer import build_tiny_transformer, save_transformer_single_file
from .vae import build_tiny_vae, save_vae_single_file


def build_tiny_models_folder(models_dir, tasks=("exo2ego", "ego2exo"), seed: int = 0) -> dict[str, ModelFiles]:
    """Write tiny models into ``models_dir/{diffusion_models,vae,text_encoders,loras}`` under the real
    names; returns the ModelFiles for each task."""
    import torch  # noqa: PLC0415

    root = Path(models_dir)
    paths = {
        "transformer": root / TRANSFORMER.folders[0] / TRANSFORMER.names[0],
        "vae": root / VAE.folders[0] / VAE.names[0],
        "text_encoder": root / TEXT_ENCODER.folders[0] / TEXT_ENCODER.names[0],
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    transformer = build_tiny_transformer(seed)
    save_transformer_single_file(transformer, paths["transformer"], prefix="model.diffusion_model.",
                                 dtype=torch.float16)
    save_vae_single_file(build_tiny_vae(seed), paths["vae"])
    with tempfile.TemporaryDirectory() as work:
        spiece = train_tiny_spiece(work)
    save_umt5_fp8_scaled(build_tiny_umt5(seed), spiece, paths["text_encoder"])
    files = {}
    for offset, name in enumerate(tasks):
        task = get_task(name)
        lora_path = root / "loras" / lora_wanted(task).names[0]
        lora_path.parent.mkdir(parents=True, exist_ok=True)
        save_worldwander_ckpt(random_lora_state_dict(transformer, rank=4, seed=seed + 1 + offset), lora_path)
        files[task.name] = ModelFiles(paths["transformer"], paths["vae"], paths["text_encoder"], lora_path)
    return files


def make_demo_clip(path, frames: int = 24, width: int = 96, height: int = 64, fps: float = 8.0) -> Path:
    """A short clip of a coloured square moving over a gradient, written as h264 mp4."""
    ys, xs = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        video[i, ..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
        video[i, ..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
        video[i, ..., 2] = 60
        x0 = int((width - 16) * i / max(frames - 1, 1))
        video[i, height // 3: height // 3 + 16, x0: x0 + 16] = (250, 220, 30)
    return write_video(path, video, fps)


def make_demo_image(width: int = 48, height: int = 64) -> np.ndarray:
    """A plain figure-like still for the ego->exo reference."""
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    image[height // 8: height - height // 8, width // 3: 2 * width // 3] = (200, 120, 90)
    return image
