"""Validation metrics (torchmetrics) against independent computations on known inputs: PSNR from its
formula in numpy, SSIM by a hand-checked case and a numpy implementation of Wang et al.'s Gaussian SSIM,
LPIPS (only with weights on this machine: here a stand-in AlexNet in a temporary torch home) by the
paper's definition; and `python -m wan_egoexo_training.evaluate` on folders paired by name. (The trainer's
validation logging them is tested with the loop.)"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wan_egoexo_training.evaluate import main as evaluate_main
from wan_egoexo_training.run.video_metrics import VideoMetrics, alexnet_weights_file
from wan_egoexo.errors import InputError
from wan_egoexo.video.read_write import write_video


def scene(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [F, H, W, 3]: moving gradients and blocks (structure, not noise)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    out = []
    for t in range(frames):
        frame = np.stack([(xs * 4 + t * 9) % 256, (ys * 5 + 40) % 256, ((xs + ys) * 3 + t * 5) % 256], -1)
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        frame[y:y + 8, x:x + 8] = rng.integers(0, 256, 3)
        out.append(frame)
    return np.stack(out).astype(np.uint8)


def numpy_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


def numpy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1, borders
    mirrored (torchmetrics' convention); mean over pixels, channels, then frames."""
    taps = np.exp(-0.5 * (np.arange(11) - 5.0) ** 2 / 1.5 ** 2)
    taps /= taps.sum()

    def blur(img):
        padded = np.pad(img, 5, mode="reflect")
        rows = sum(taps[i] * padded[i:i + img.shape[0], :] for i in range(11))
        return sum(taps[j] * rows[:, j:j + img.shape[1]] for j in range(11))

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    scores = []
    for fa, fb in zip(a.astype(np.float64) / 255, b.astype(np.float64) / 255):
        maps = []
        for c in range(3):
            x, y = fa[..., c], fb[..., c]
            mx, my = blur(x), blur(y)
            vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
            maps.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        scores.append(np.mean(maps))
    return float(np.mean(scores))


def test_psnr_and_ssim_match_independent_computations():
    truth = scene(4, 40, 48, seed=1)
    noisy = np.clip(truth.astype(int) + np.random.default_rng(2).integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    scores = VideoMetrics(lpips="off")(noisy, truth)
    assert set(scores) == {"psnr", "ssim"}
    assert scores["psnr"] == pytest.approx(numpy_psnr(noisy, truth), abs=1e-5)  # torchmetrics: 10/ln 10 in float32
    assert scores["ssim"] == pytest.approx(numpy_ssim(noisy, truth), abs=1e-9)  # another window: > 0.05 off
    assert 0.3 < scores["ssim"] < 0.99
    # hand-checked: flat frames of levels 100 and 150 have no structure term, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((2, 32, 32, 3), 100, np.uint8), np.full((2, 32, 32, 3), 150, np.uint8)
    flat = VideoMetrics(lpips="off")(a, b)
    x, y, c1 = 100 / 255, 150 / 255, 0.01 ** 2
    assert flat["ssim"] == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), abs=1e-9)
    assert flat["psnr"] == pytest.approx(10 * math.log10(1 / (50 / 255) ** 2), abs=1e-5)
    # float videos in [-1, 1] (the trainer's) score as their 8-bit frames
    as_float = torch.from_numpy(noisy).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert VideoMetrics(lpips="off")(as_float, truth) == pytest.approx(scores, abs=1e-6)
    with pytest.raises(InputError, match="4 frames of 48x40 but its ground truth is 3 frames of 48x40"):
        VideoMetrics(lpips="off")(noisy, truth[:3])


def reference_lpips(alexnet_features, lin_weights: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """LPIPS by its definition (Zhang et al. 2018): AlexNet activations after each of its 5 ReLU stages,
    unit-normalised over channels, squared differences weighted per channel, averaged over space, summed."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    stages = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]

    def activations(img):
        h, out = (img * 2 - 1 - shift) / scale, []
        for lo, hi in stages:
            for layer in list(alexnet_features)[lo:hi]:
                h = layer(h)
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    total = 0.0
    for k, (fx, fy) in enumerate(zip(activations(x), activations(y))):
        weight = lin_weights[f"lin{k}.model.1.weight"]
        total += float(((fx - fy) ** 2 * weight.view(1, -1, 1, 1)).sum(1).mean())
    return total


def test_lpips_only_with_local_weights_and_by_its_definition(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    video, other = scene(2, 64, 64, seed=3), scene(2, 64, 64, seed=4)
    absent = VideoMetrics(lpips="auto")
    assert "lpips" not in absent(video, other) and "never downloaded" in absent.lpips_note
    with pytest.raises(InputError, match="lpips: 'on' but the AlexNet weights are not at"):
        VideoMetrics(lpips="on")
    # a stand-in AlexNet (random, seeded) where torchvision keeps the real one; big layers as broadcast views
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: (v if k.startswith("features") else torch.zeros(1).expand(v.shape)) for k, v in state.items()}
    path = alexnet_weights_file()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    metrics = VideoMetrics(lpips="auto")
    assert metrics.lpips_note is None
    scores = metrics(video, other)
    features = torchvision.models.alexnet(weights=None)
    features.load_state_dict(state)
    import torchmetrics.functional.image.lpips as lpips_module  # the published LPIPS linear weights it ships

    lin = torch.load(Path(lpips_module.__file__).parent / "lpips_models" / "alex.pth", weights_only=True,
                     map_location="cpu")
    frames = [torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255 for v in (video, other)]
    with torch.no_grad():
        expected = np.mean([reference_lpips(features.features.eval(), lin, frames[0][i:i + 1], frames[1][i:i + 1])
                            for i in range(2)])
    assert scores["lpips"] == pytest.approx(expected, rel=1e-4) and scores["lpips"] > 0
    assert metrics(video, video)["lpips"] == pytest.approx(0.0, abs=1e-7)


def test_evaluate_scores_a_folder_of_outputs_paired_by_name(tmp_path, capsys):
    outputs, truth = tmp_path / "outputs", tmp_path / "truth"
    clips = {name: scene(5, 32, 64, seed=i) for i, name in enumerate(["walk01", "walk02"])}
    for name, frames in clips.items():
        folder = truth / name
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:05d}.png")
    shifted = {name: np.roll(frames, 2, axis=2) for name, frames in clips.items()}
    for name, frames in shifted.items():  # a batch output name, and a plain one
        folder = outputs / (f"{name}_exo2ego" if name == "walk01" else name)
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:05d}.png")
    write_video(outputs / "stray.mp4", clips["walk01"], 8.0)
    assert evaluate_main([str(outputs), str(truth), "--json", str(tmp_path / "scores.json"), "--lpips", "off"]) == 0
    report = json.loads((tmp_path / "scores.json").read_text())
    assert [row["name"] for row in report["pairs"]] == ["walk01", "walk02"]
    for row in report["pairs"]:
        assert row["psnr"] == pytest.approx(numpy_psnr(shifted[row["name"]], clips[row["name"]]), abs=1e-5)
        assert row["ssim"] == pytest.approx(numpy_ssim(shifted[row["name"]], clips[row["name"]]), abs=1e-9)
    assert report["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["pairs"]]))
    assert report["unpaired"] == [str(outputs / "stray.mp4")]
    printed = capsys.readouterr().out
    assert "walk01" in printed and "mean of 2" in printed and "no ground truth for" in printed
    (truth / "walk02" / "00004.png").unlink()
    assert evaluate_main([str(outputs), str(truth), "--lpips", "off"]) == 1
    assert "5 frames of 64x32 but its ground truth is 4 frames of 64x32" in capsys.readouterr().err
