"""Long clips through sliding windows, the input's frame count and rate on output, and batches."""

import numpy as np
import pytest

import wan_egoexo.sampling.sampler as sampling
import wan_egoexo.cli.main as cli
from wan_egoexo.pipeline.batch import is_batch_source, list_clips, parse_shard
from wan_egoexo.errors import InputError
from wan_egoexo.pipeline.translation import encode_task_prompts, translate_frames
from wan_egoexo.sampling.sampler import SamplingSettings
from wan_egoexo.in_context.tasks import EXO2EGO
from wan_egoexo.models.text_encoder_loader import load_text_encoder
from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip
from wan_egoexo.models.transformer_loader import load_transformer
from wan_egoexo.models.vae_loader import load_vae
from wan_egoexo.video.fit import FitOptions
from wan_egoexo.video.read_write import read_video
from wan_egoexo.in_context.windows import WindowOptions


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    files = build_tiny_models_folder(root, tasks=["exo2ego"])["exo2ego"]
    text_encoder = load_text_encoder(files.text_encoder, device="cpu")
    cond, uncond = encode_task_prompts(text_encoder, EXO2EGO, cfg=5.0)
    return root, load_transformer(files.transformer, device="cpu"), load_vae(files.vae, device="cpu"), cond, uncond


def _frames(count, height=32, width=32):
    rng = np.random.default_rng(count)
    return rng.integers(0, 255, size=(count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("count", [1, 5, 49, 50, 97, 200])
def test_output_has_the_inputs_frame_count(models, count, monkeypatch):
    _, transformer, vae, cond, uncond = models
    seen_frames = []
    real = sampling.predict_flow
    monkeypatch.setattr(sampling, "predict_flow",
                        lambda m, x, *a: seen_frames.append(x.shape[2]) or real(m, x, *a))
    result = translate_frames(transformer, vae, cond, uncond, _frames(count), 8.0, "exo2ego",
                              fit=FitOptions(width=32, height=32, max_frames=None),
                              settings=SamplingSettings(steps=1), windows=WindowOptions(13, 4),
                              frame_rate="source")
    assert result.frames.shape == (count, 32, 32, 3) and result.fps == 8.0
    # every forward sees at most one trained-length window, however long the clip: memory beyond the
    # latents does not grow with length
    padded = count + (-(count - 1)) % 4  # 4k+1 video frames
    assert max(seen_frames) == min(13, (padded - 1) // 4 + 1)


def test_other_input_rates_keep_duration_and_count(models):
    _, transformer, vae, cond, uncond = models
    result = translate_frames(transformer, vae, cond, uncond, _frames(60), 30.0, "exo2ego",
                              fit=FitOptions(width=32, height=32, max_frames=None, fps=8.0),
                              settings=SamplingSettings(steps=1), frame_rate="source")
    assert result.fit.real_frames == 16 and result.frames.shape[0] == 60 and result.fps == 30.0
    model_rate = translate_frames(transformer, vae, cond, uncond, _frames(60), 30.0, "exo2ego",
                                  fit=FitOptions(width=32, height=32, max_frames=None, fps=8.0),
                                  settings=SamplingSettings(steps=1), frame_rate="model")
    assert model_rate.frames.shape[0] == 16 and model_rate.fps == 8.0
    # "source" shows, for each input frame, the translated frame nearest in time
    assert np.array_equal(result.frames[0], model_rate.frames[0])
    assert np.array_equal(result.frames[-1], model_rate.frames[-1])


def test_batch_refuses_bad_clips_up_front_then_resumes(models, tmp_path, capsys, monkeypatch):
    root = models[0]
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        make_demo_clip(clips / f"{name}.mp4", frames=9, width=64, height=64)
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    out = tmp_path / "out"
    args = ["translate", "--task", "exo2ego", "--video", str(clips), "--out", str(out), "--models-dir", str(root),
            "--width", "64", "--height", "64", "--steps", "1"]
    assert cli.main(args) == 1
    assert "broken.mp4: cannot be read as a video" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # refused before anything ran
    (clips / "broken.mp4").unlink()
    assert cli.main(args) == 0
    assert "2 translated, 0 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a_exo2ego.mp4", "b_exo2ego.mp4"]
    first = (out / "a_exo2ego.mp4").stat().st_mtime_ns
    (out / "b_exo2ego.mp4").unlink()

    # a clip that fails while running is recorded and the batch goes on
    import wan_egoexo.cli.translate as cli_translate
    real = cli_translate.translate_clip

    def failing(models, source, out_path, *args, **kwargs):
        if source.path.name == "b.mp4":
            raise InputError("b.mp4: out of memory in the sampler (simulated)")
        return real(models, source, out_path, *args, **kwargs)

    monkeypatch.setattr(cli_translate, "translate_clip", failing)
    assert cli.main(args) == 1
    text = capsys.readouterr().out
    assert "0 translated, 1 skipped (output exists), 1 failed" in text and "FAILED" in text and "simulated" in text
    assert (out / "a_exo2ego.mp4").stat().st_mtime_ns == first
    monkeypatch.setattr(cli_translate, "translate_clip", real)
    assert cli.main(args) == 0
    assert read_video(out / "b_exo2ego.mp4").num_frames == 9


def test_batch_sources_and_shards(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i}.png").write_bytes(b"")
    assert not is_batch_source(frames)  # a folder of images is one clip
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\nx.mp4\n\nsub/y.mp4\n")
    assert is_batch_source(listing)
    assert list_clips(listing) == [(tmp_path / "x.mp4").resolve(), (tmp_path / "sub" / "y.mp4").resolve()]
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(InputError, match="shard"):
        parse_shard("4/4")


def test_long_clip_benchmark_runs(tmp_path, capsys):
    """benchmarks/bench_long_clips.py in a fast setting, so the script never rots."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_long_clips.py"
    spec = importlib.util.spec_from_file_location("bench_long_clips", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.json"
    assert bench.main(["--frames", "5", "20", "--size", "32", "--steps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["output_frames"] for r in rows] == [5, 20] and all(r["peak_rss_mb"] > 0 for r in rows)
    assert "peak RSS MB" in capsys.readouterr().out
