"""The headless path end to end on tiny real-layout model files: translate, errors, convert-lora."""

import numpy as np
import pytest
import torch

import wan_egoexo.cli.main as cli
from wan_egoexo.lora import active_loras, apply_lora
from wan_egoexo.models.model_files import find_model_files
from wan_egoexo.pipeline.translation import encode_task_prompts, translate_frames
from wan_egoexo.sampling.sampler import SamplingSettings
from wan_egoexo.in_context.tasks import get_task
from wan_egoexo.models.text_encoder_loader import load_text_encoder
from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip, make_demo_image
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.models.vae_loader import load_vae
from wan_egoexo.video.fit import FitOptions
from wan_egoexo.video.read_write import read_video

SMALL = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root)
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "in.mp4", frames=20, width=96, height=64)


def test_translate_command_writes_clip(models, clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = cli.main(["translate", "--task", "three2one", "--video", str(clip), "--out", str(out),
                     "--models-dir", str(models), *SMALL])
    assert code == 0, capsys.readouterr().err
    video = read_video(out)
    assert video.frames.shape == (9, 64, 64, 3) and video.fps == pytest.approx(8.0)
    assert "wrote" in capsys.readouterr().out


def test_ego2exo_with_reference_and_pad_keeps_input_size(models, clip, tmp_path):
    from PIL import Image

    ref = tmp_path / "ref.png"
    Image.fromarray(make_demo_image()).save(ref)
    out = tmp_path / "out.mp4"
    code = cli.main(["translate", "--task", "ego2exo", "--video", str(clip), "--reference", str(ref),
                     "--out", str(out), "--models-dir", str(models), "--fit", "pad", *SMALL])
    assert code == 0
    assert read_video(out).frames.shape == (9, 64, 96, 3)  # the input's 96x64, restored from the 64x64 grid


def test_ego2exo_without_reference_is_named(models, clip, tmp_path, capsys):
    code = cli.main(["translate", "--task", "ego2exo", "--video", str(clip), "--out", str(tmp_path / "o.mp4"),
                     "--models-dir", str(models), *SMALL])
    assert code == 1
    assert "reference" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_missing_files_listed_with_folder_and_download(tmp_path, clip, capsys):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "wan2.2_vae.safetensors").write_bytes(b"")
    code = cli.main(["translate", "--task", "exo2ego", "--video", str(clip), "--out", str(tmp_path / "o.mp4"),
                     "--models-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    for name, folder in [("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models"),
                         ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
                         ("wan2-2_lora_three2one_realworld.ckpt", "loras")]:
        assert name in err and str(tmp_path / folder) in err
    assert "wan2.2_vae.safetensors" not in err
    assert err.count("download: https://") == 3


def test_same_seed_same_video_and_lora_changes_it(models, clip):
    files = find_model_files(get_task("exo2ego"), models)
    text_encoder = load_text_encoder(files.text_encoder, device="cpu")
    cond, uncond = encode_task_prompts(text_encoder, get_task("exo2ego"), cfg=5.0)
    vae = load_vae(files.vae, device="cpu")
    transformer = load_transformer(files.transformer, device="cpu")
    video = read_video(clip)
    fit = FitOptions(width=64, height=64, max_frames=9)

    def run(seed):
        return translate_frames(transformer, vae, cond, uncond, video.frames, video.fps, "exo2ego", fit=fit,
                                settings=SamplingSettings(steps=2, seed=seed))

    first, again, other = run(5), run(5), run(6)
    assert np.array_equal(first.frames, again.frames) and torch.equal(first.latents, again.latents)
    assert not torch.equal(first.latents, other.latents)
    apply_lora(transformer, files.lora)
    assert active_loras(transformer)
    assert not torch.equal(run(5).latents, first.latents)


def test_convert_lora_command(models, tmp_path, capsys):
    src = models / "loras" / "wan2-2_lora_three2one_realworld.ckpt"
    dst = tmp_path / "converted.safetensors"
    assert cli.main(["convert-lora", str(src), str(dst)]) == 0
    transformer = load_transformer(models / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors", device="cpu")
    name = apply_lora(transformer, dst)
    assert name in active_loras(transformer)


def test_demo_runs(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert cli.main(["translate", "--demo", "--task", "ego2exo", "--out", str(out)]) == 0
    assert read_video(out).num_frames == 9
    assert "noise" in capsys.readouterr().out


def test_memory_flags_and_prompt_cache(models, clip, tmp_path, monkeypatch, capsys):
    """A repeat run with the prompt cache never loads UMT5; --memory none gives the same video as auto
    (compact modulation is exact up to float rounding)."""
    import wan_egoexo.pipeline.translation as pipeline
    import wan_egoexo.models.text_encoder_loader as te_loader

    loads = []
    real = te_loader.load_text_encoder
    counting = lambda *a, **k: loads.append(a) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(te_loader, "load_text_encoder", counting)  # the cache's loader
    monkeypatch.setattr(pipeline, "load_text_encoder", counting)  # the uncached path
    cache = tmp_path / "cache"
    outs = []
    for index, extra in enumerate([["--memory", "auto"], ["--memory", "auto"], ["--memory", "none", "--no-offload"]]):
        out = tmp_path / f"o{index}.mp4"
        assert cli.main(["translate", "--video", str(clip), "--out", str(out), "--models-dir", str(models),
                         "--prompt-cache", str(cache), *SMALL, *extra]) == 0
        outs.append(read_video(out).frames.astype(int))
    assert len(loads) == 2  # first auto run fills the cache; the second hits it; "none" bypasses the cache
    assert len(list(cache.glob("*.safetensors"))) == 2  # the task prompt and the empty negative prompt
    assert np.abs(outs[0] - outs[1]).max() == 0
    # after h264 at crf 17 on a noise-like video, 1e-6 float differences move a few pixels by a few levels;
    # tensor-level equality of the options is tested in test_memory_options.py
    assert np.abs(outs[0] - outs[2]).mean() < 0.5
    assert "memory plan on cpu: compact_modulation, prompt_cache" in capsys.readouterr().out
