"""The training pixels equal the authors' transform sequence, recomputed here independently with
torchvision over PIL images exactly as their dataset composes it: resize by the long side (sizes
rounded with round(), bilinear, antialias=True), CenterCrop, ToTensor, Normalize(0.5, 0.5); the
reference with Resize([h, w]). Frames are structured (a chirp with every spatial frequency, hard-edged
checks, ramps, flat patches), at an upscale, a downscale and the identity size."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from wan_egoexo_training.data.clips import fit_frames, load_reference
from wan_egoexo_training.data.dataset import VideoTripletDataset
from wan_egoexo_training.data.dataset_checks import ClipGeometry, WindowSettings
from wan_egoexo_training.data.pairing import Triplet

ONE_LEVEL = 2.0 / 255.0  # one 8-bit level on the [-1, 1] scale


def structured_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    radius = np.hypot(xs - width / 2, ys - height / 2)
    chirp = 127.5 + 127.5 * np.cos(radius * radius / (width * 1.5))
    checks = ((xs // 7 + ys // 5) % 2) * 255.0
    ramp = xs / width * 255.0
    frame = np.stack([chirp, 0.6 * checks + 0.4 * ramp, 0.5 * ramp[:, ::-1] + 0.5 * chirp], axis=-1)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 8), rng.integers(0, height - 8)
        frame[y0:y0 + rng.integers(3, 20), x0:x0 + rng.integers(3, 20)] = rng.integers(0, 256, 3)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def authors_video_frame(image: Image.Image, resize_long: int, height: int, width: int) -> torch.Tensor:
    w, h = image.size
    scale = resize_long / max(w, h)
    resized = TF.resize(image, (int(round(h * scale)), int(round(w * scale))),
                        interpolation=transforms.InterpolationMode.BILINEAR, antialias=True)
    rest = transforms.Compose([transforms.CenterCrop([height, width]), transforms.ToTensor(),
                               transforms.Normalize([0.5] * 3, [0.5] * 3)])
    return rest(resized)


def authors_reference(image: Image.Image, height: int, width: int) -> torch.Tensor:
    return transforms.Compose([transforms.Resize([height, width]), transforms.ToTensor(),
                               transforms.Normalize([0.5] * 3, [0.5] * 3)])(image)


def assert_within_one_level(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    difference = (ours - theirs).abs().max().item()
    assert difference <= ONE_LEVEL + 1e-6, f"max difference {difference / ONE_LEVEL:.2f} levels"


@pytest.mark.parametrize("source, resize_long", [
    ((300, 170), 160),   # downscale (the synthetic recipe's 1920x1080 -> 1505 in small)
    ((100, 60), 160),    # upscale
    ((160, 90), 160),    # identity size: only the crop
    ((1920, 1080), 1505),  # the synthetic recipe at full size, crop 1280x704
])
def test_video_frames_match_the_authors_transforms(source, resize_long):
    height, width = (704, 1280) if resize_long == 1505 else (64, 128)
    frames = np.stack([structured_frame(*source, seed=i) for i in range(2)])
    ours = fit_frames(frames, resize_long, height, width)
    for i, frame in enumerate(frames):
        assert_within_one_level(ours[:, i], authors_video_frame(Image.fromarray(frame), resize_long, height, width))


@pytest.mark.parametrize("source", [(90, 140), (50, 30), (128, 64)])  # down / stretched, up, identity
def test_reference_matches_the_authors_transforms(tmp_path, source):
    path = tmp_path / "reference.png"
    Image.fromarray(structured_frame(*source, seed=5)).save(path)
    ours = load_reference(path, 64, 128)
    assert ours.shape == (3, 1, 64, 128)
    assert_within_one_level(ours[:, 0], authors_reference(Image.open(path).convert("RGB"), 64, 128))


def test_a_frame_folder_sample_matches_the_authors_pipeline(tmp_path):
    """The authors' loader on PNG frames: PIL open, convert("RGB"), the transforms; ours reads the folder."""
    views = {}
    for view, seed in (("ego", 10), ("exo", 20)):
        folder = tmp_path / view / "clip"
        folder.mkdir(parents=True)
        for i in range(7):
            Image.fromarray(structured_frame(200, 120, seed=seed + i)).save(folder / f"{i:05d}.png")
        views[view] = folder
    Image.fromarray(structured_frame(70, 110, seed=3)).save(tmp_path / "reference.png")
    triplet = Triplet("clip", views["ego"], views["exo"], tmp_path / "reference.png", None)
    dataset = VideoTripletDataset([triplet], {"clip": ClipGeometry(7, (200, 120), (200, 120))},
                                  WindowSettings(num_frames=3, frame_stride=2, height=64, width=128, resize_long=150),
                                  seed=0, load_references=True)
    sample = dataset.pixels(0, 1, False, True)
    for view in ("ego", "exo"):
        for k, index in enumerate((1, 3, 5)):
            image = Image.open(views[view] / f"{index:05d}.png").convert("RGB")
            assert_within_one_level(sample[view][:, k], authors_video_frame(image, 150, 64, 128))
    assert_within_one_level(sample["reference"][:, 0],
                            authors_reference(Image.open(tmp_path / "reference.png").convert("RGB"), 64, 128))
