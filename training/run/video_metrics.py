"""Image-quality metrics of a generated video against its ground truth, by torchmetrics.

- PSNR: per frame, data range 1 (frames in [0, 1]), averaged over the frames, in dB;
- SSIM: per frame, torchmetrics' defaults (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, the
  channels averaged), averaged over the frames;
- LPIPS (AlexNet, torchmetrics' bundled linear layers): only when torchvision's AlexNet weights are
  already on this machine (torch's hub cache); they are never downloaded.

Both videos are compared as 8-bit frames (what a written video holds), shape [F, 3, H, W] in [0, 1];
PSNR and SSIM are computed in float64, eight frames at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from wan_egoexo.errors import InputError

LPIPS_MODES = ("auto", "on", "off")


def as_unit_frames(video) -> torch.Tensor:
    """uint8 [F, H, W, 3] (numpy or torch), or float [3, F, H, W] in [-1, 1] -> float64 [F, 3, H, W] in
    [0, 1] on 8-bit levels."""
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if video.dtype == torch.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"video: shape {tuple(video.shape)} is not uint8 [F, H, W, 3].")
        return video.permute(0, 3, 1, 2).double() / 255.0
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(f"video: shape {tuple(video.shape)} is not float [3, F, H, W] in [-1, 1].")
    levels = ((video.float().clamp(-1, 1) + 1.0) * 127.5).round()
    return levels.permute(1, 0, 2, 3).double() / 255.0


def alexnet_weights_file() -> Path | None:
    """Where torchvision keeps AlexNet's ImageNet weights (None without torchvision)."""
    try:
        from torchvision.models import AlexNet_Weights  # noqa: PLC0415
    except ImportError:
        return None
    name = AlexNet_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


class VideoMetrics:
    """``metrics(generated, truth)`` -> {"psnr", "ssim"[, "lpips"]} (floats; PSNR is inf for identical videos).
    ``lpips``: "auto" (when the weights are on this machine), "on" (error without them) or "off"."""

    def __init__(self, device="cpu", lpips: str = "auto"):
        if lpips not in LPIPS_MODES:
            raise InputError(f"lpips: {lpips!r}; expected one of {', '.join(LPIPS_MODES)}.")
        self.device = torch.device(device)
        self.lpips_model = None
        self.lpips_note = None
        if lpips != "off":
            weights = alexnet_weights_file()
            if weights is not None and weights.is_file():
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity  # noqa: PLC0415

                self.lpips_model = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True,
                                                                          reduction="mean").to(self.device)
            else:
                where = weights if weights is not None else "torchvision (not installed)"
                self.lpips_note = f"LPIPS skipped: the AlexNet weights are not at {where} (they are never downloaded)."
                if lpips == "on":
                    raise InputError(f"lpips: 'on' but {self.lpips_note[len('LPIPS skipped: '):]} Expected the file "
                                     "there, or lpips auto / off.")

    @torch.no_grad()
    def __call__(self, generated, truth) -> dict[str, float]:
        from torchmetrics.functional.image import (peak_signal_noise_ratio,  # noqa: PLC0415
                                                   structural_similarity_index_measure)

        fake, real = as_unit_frames(generated).to(self.device), as_unit_frames(truth).to(self.device)
        if fake.shape != real.shape:
            raise InputError(f"generated video is {_describe(fake)} but its ground truth is {_describe(real)}; "
                             "expected the same frame count and size.")
        # float64: SSIM's variances (E[x^2] - E[x]^2) lose ~1e-4 to cancellation in float32
        psnr = peak_signal_noise_ratio(fake, real, data_range=1.0, reduction="none", dim=(1, 2, 3))
        ssim = torch.cat([structural_similarity_index_measure(fake[i:i + 8], real[i:i + 8], data_range=1.0,
                                                              reduction="none") for i in range(0, len(fake), 8)])
        out = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
        if self.lpips_model is not None:
            scores = [float(self.lpips_model(fake[i:i + 1].float(), real[i:i + 1].float())) for i in range(len(fake))]
            out["lpips"] = sum(scores) / len(scores)
        return out


def _describe(frames: torch.Tensor) -> str:
    return f"{frames.shape[0]} frames of {frames.shape[3]}x{frames.shape[2]}"


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over rows (PSNR's inf of identical pairs is left out; inf when every pair is identical)."""
    out = {}
    for key in sorted({k for row in rows for k in row}):
        values = [row[key] for row in rows if key in row]
        finite = [v for v in values if math.isfinite(v)]
        out[key] = sum(finite) / len(finite) if finite else values[0]
    return out
