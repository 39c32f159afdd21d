"""ComfyUI <-> core conversions (wan_egoexo.comfy_interop), checked against independent computations."""

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wan_egoexo.comfy_interop import (DIFFUSERS_LABEL, WAN22_LATENT_RGB_BIAS, WAN22_LATENT_RGB_FACTORS,
                                      conditioning_to_embeddings, find_diffusers_folders, first_image,
                                      image_batch_to_video, latent_preview_rgb, latent_samples, restore_frames,
                                      video_to_image_batch, write_preview_gif)
from wan_egoexo.errors import InputError
from wan_egoexo.video.fit import FitOptions, fit_video, unfit_video

REPO = Path(__file__).resolve().parents[1]
# ComfyUI's source: the host the end-to-end tests run (COMFYUI_PATH), else the project's shared copy.
COMFYUI_CANDIDATES = [os.environ.get("COMFYUI_PATH"), REPO / "shared/comfyui/ComfyUI-0.3.64",
                      REPO.parent / "shared/comfyui/ComfyUI-0.3.64"]


# ---------------------------------------------------------------- IMAGE batches <-> videos

def test_image_batch_round_trips_through_the_model_video_layout():
    images = torch.rand(9, 64, 96, 3)
    video = image_batch_to_video(images, "source")
    assert video.shape == (1, 3, 9, 64, 96)
    assert torch.allclose(video[0, :, 4], images[4].permute(2, 0, 1) * 2 - 1, atol=1e-6)
    assert torch.allclose(video_to_image_batch(video), images, atol=1e-6)
    assert torch.allclose(video_to_image_batch(video[0]), images, atol=1e-6)


@pytest.mark.parametrize("shape, fragment", [
    ((8, 64, 64, 3), "4k+1"),
    ((9, 64, 70, 3), "multiple of 32"),
    ((9, 64, 64, 4), "IMAGE batch"),
])
def test_off_grid_images_are_refused_naming_the_input(shape, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)) as error:
        image_batch_to_video(torch.rand(shape), "source")
    assert str(error.value).startswith("source:")


def test_pixel_values_instead_of_unit_range_are_refused():
    with pytest.raises(InputError, match="source: values span .* expected an IMAGE in 0..1"):
        image_batch_to_video(torch.rand(5, 32, 32, 3) * 255, "source")


def test_first_image_warns_when_a_batch_has_more():
    batch = torch.rand(2, 16, 8, 3)
    with pytest.warns(UserWarning, match="reference: got 2 images; only the first is used"):
        image = first_image(batch, "reference")
    assert torch.equal(image, batch[0])


def test_restore_frames_is_unfit_video_per_clip_and_the_fitted_size_without_a_fit():
    clip = (np.random.default_rng(0).random((7, 40, 72, 3)) * 255).astype(np.uint8)
    video, info = fit_video(clip, 8.0, FitOptions(width=64, height=32, max_frames=9, fps=None, mode="pad"))
    batch = torch.stack([video, -video])
    restored = restore_frames(batch, info)
    assert restored.shape == (2 * info.real_frames, 40, 72, 3)  # pad mode restores the source size
    expected = np.concatenate([unfit_video(video, info), unfit_video(-video, info)]).astype(np.float32) / 255
    assert np.array_equal(restored.numpy(), expected)
    plain = restore_frames(video[None])
    assert plain.shape == (9, 32, 64, 3)
    assert torch.allclose(plain, (video.permute(1, 2, 3, 0) + 1) / 2, atol=1e-6)


# ---------------------------------------------------------------- LATENT and CONDITIONING

def test_latent_samples_names_the_input():
    assert latent_samples({"samples": torch.zeros(1, 48, 2, 2, 2)}).shape == (1, 48, 2, 2, 2)
    with pytest.raises(InputError, match="init_latent: expected a video LATENT"):
        latent_samples({"samples": torch.zeros(1, 4, 8, 8)}, "init_latent")


def test_conditioning_is_zero_padded_to_512_like_the_core_encoder():
    states = torch.randn(1, 7, 16)
    embeds = conditioning_to_embeddings([[states, {"pooled_output": None}]], "positive")
    assert embeds.shape == (1, 512, 16) and embeds.dtype == torch.float32
    assert torch.equal(embeds[:, :7], states)
    assert not embeds[:, 7:].any()
    # ComfyUI's own UMT5 output is already 512 long with zeroed padding: unchanged.
    assert torch.equal(conditioning_to_embeddings([[embeds.clone(), {}]]), embeds)


def test_long_or_combined_conditioning_warns_and_keeps_what_the_model_reads():
    long = torch.randn(1, 600, 8)
    with pytest.warns(UserWarning, match="600 text tokens; only the first 512"):
        assert torch.equal(conditioning_to_embeddings([[long, {}]]), long[:, :512])
    first, second = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with pytest.warns(UserWarning, match="negative: holds 2 conditionings"):
        embeds = conditioning_to_embeddings([[first, {}], [second, {}]], "negative")
    assert torch.equal(embeds[:, :3], first)


@pytest.mark.parametrize("bad", [None, [], [["text", {}]], [[torch.zeros(2, 4, 8), {}]], [[torch.zeros(4, 8), {}]]])
def test_malformed_conditioning_is_refused_naming_the_input(bad):
    with pytest.raises(InputError, match="^positive: "):
        conditioning_to_embeddings(bad, "positive")


# ---------------------------------------------------------------- previews

def test_latent_preview_is_the_linear_rgb_map_of_one_frame():
    latents = torch.randn(2, 48, 3, 4, 5)
    factors = np.array(WAN22_LATENT_RGB_FACTORS)
    bias = np.array(WAN22_LATENT_RGB_BIAS)
    for frame in (None, 0):
        index = 1 if frame is None else frame  # the middle frame by default
        x = latents[0, :, index].double().numpy()
        expected = np.empty((4, 5, 3))
        for row in range(4):
            for col in range(5):
                expected[row, col] = x[:, row, col] @ factors + bias
        expected = np.clip(np.round((expected + 1) * 127.5), 0, 255)
        got = latent_preview_rgb(latents, frame)
        assert got.dtype == np.uint8 and got.shape == (4, 5, 3)
        assert np.abs(got.astype(int) - expected).max() <= 1  # float32 vs float64 rounding only
    with pytest.raises(InputError, match="Wan2.2 latents"):
        latent_preview_rgb(torch.randn(1, 16, 3, 4, 5))


def _comfyui_source(path: str) -> str:
    """A file of ComfyUI's source, read as text (never imported). Under CI=true a missing tree fails."""
    root = next((Path(c) for c in COMFYUI_CANDIDATES if c and (Path(c) / path).is_file()), None)
    if root is None:
        message = f"ComfyUI's {path} was not found (set COMFYUI_PATH to a ComfyUI source tree)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return (root / path).read_text()


@pytest.mark.comfyui_host
def test_preview_factors_are_comfyuis_wan22_table():
    tree = ast.parse(_comfyui_source("comfy/latent_formats.py"))
    wan22 = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Wan22")
    values = {}
    for statement in wan22.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            name = statement.targets[0].id
            if name in ("latent_rgb_factors", "latent_rgb_factors_bias"):
                values[name] = ast.literal_eval(statement.value)
    assert np.array_equal(np.array(values["latent_rgb_factors"]), np.array(WAN22_LATENT_RGB_FACTORS))
    assert np.array_equal(np.array(values["latent_rgb_factors_bias"]), np.array(WAN22_LATENT_RGB_BIAS))


def test_preview_gif_is_animated_scaled_and_timed(tmp_path):
    frames = (np.random.default_rng(1).random((5, 100, 700, 3)) * 255).astype(np.uint8)
    path = write_preview_gif(tmp_path / "sub" / "p.gif", frames, fps=8.0)
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        assert gif.size == (512, 73)  # 700x100 scaled to a 512 long side
        assert gif.info["duration"] == 120  # 1/8 s in GIF's 10 ms units
        assert gif.info.get("loop") == 0
    with pytest.raises(InputError, match="fps"):
        write_preview_gif(tmp_path / "q.gif", frames, fps=0.0)


# ---------------------------------------------------------------- models on disk and in memory

def test_diffusers_pipelines_are_found_by_model_index(tmp_path):
    root = tmp_path / "diffusers"
    for folder in ("Wan2.2-TI2V-5B-Diffusers", "team/other"):
        (root / folder / "transformer").mkdir(parents=True)
        (root / folder / "model_index.json").write_text("{}")
        (root / folder / "transformer" / "model_index.json").write_text("{}")  # a component is no pipeline
    (root / "not_a_pipeline").mkdir()
    (root / "not_a_pipeline" / "notes.txt").write_text("x")
    found = find_diffusers_folders([root, tmp_path / "missing"])
    assert found == {DIFFUSERS_LABEL + "Wan2.2-TI2V-5B-Diffusers": root / "Wan2.2-TI2V-5B-Diffusers",
                     DIFFUSERS_LABEL + "team/other": root / "team" / "other"}
