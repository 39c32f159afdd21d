"""Issue 18: output memory is planned, the user's files are never replaced, and late or raw errors are
named: the streamed restore, the memory refusals, an output naming its input, a batch folder holding
its inputs, an unwritable prompt cache, a full disk under the trainer's metrics, long or NUL file name
prefixes, and In-Context's frame limit and interruption."""

import errno
import hashlib
import warnings

import numpy as np
import pytest
import torch

import wan_egoexo.video.host_memory as host_memory
from stub_comfy_host import host, nodes, run  # noqa: F401  (fixtures)
from stub_comfy_host import models_dir  # noqa: F401
from wan_egoexo.errors import InputError, WriteError
from wan_egoexo.video.fit import FitOptions, fit_video
from wan_egoexo.video.pixels import resize
from wan_egoexo.video.restore import RestoredFrames, source_rate_frame_map, unfit_video
from wan_egoexo.video.read_write import read_video, write_video


def _fitted(source_fps=24.0, frames=30, size=(200, 120)):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (frames, size[1], size[0], 3), dtype=np.uint8)
    video, info = fit_video(clip, source_fps, FitOptions(width=64, height=64, max_frames=9, mode="pad"))
    return video, info


def _restore_whole(video, info):
    """An independent restore: every real frame at once, then uint8 (no streaming, no chunks)."""
    x, y, w, h = info.content_box
    whole = video[:, :info.real_frames, y:y + h, x:x + w].permute(1, 0, 2, 3).clamp(-1, 1)
    out_w, out_h = info.output_size
    pixels = ((resize(whole, out_h, out_w) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("frame_rate", ["model", "source"])
def test_the_streamed_restore_equals_a_whole_restore_one_frame_at_a_time(frame_rate, monkeypatch):
    import wan_egoexo.video.restore as restore

    video, info = _fitted()
    whole = _restore_whole(video, info)
    expected = whole[source_rate_frame_map(info)] if frame_rate == "source" else whole
    monkeypatch.setattr(restore, "RESTORE_BYTES", 1)  # one frame per restoring step
    frames = RestoredFrames(video, info, frame_rate)
    assert frames.chunk == 1 and len(frames) == len(expected) and (frames.width, frames.height) == (200, 120)
    assert np.array_equal(np.stack(list(frames)), expected)
    assert np.array_equal(unfit_video(video, info, frame_rate), expected)


def test_writing_streamed_frames_gives_the_same_file_as_writing_the_array(tmp_path):
    video, info = _fitted()
    write_video(tmp_path / "array.mp4", unfit_video(video, info, "source"), info.source_fps)
    write_video(tmp_path / "stream.mp4", RestoredFrames(video, info, "source"), info.source_fps)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("array.mp4", "stream.mp4")]
    assert digest[0] == digest[1]
    assert read_video(tmp_path / "stream.mp4").frames.shape == (len(source_rate_frame_map(info)), 120, 200, 3)


def test_a_restore_that_cannot_be_held_is_refused_with_what_to_change(monkeypatch):
    from wan_egoexo.comfy_interop import restored_image_batch

    video, info = _fitted()
    monkeypatch.setattr(host_memory, "available_memory", lambda: 1 << 20)
    with pytest.raises(InputError, match=r"restoring \d+ frames of 200x120 .*--output-rate model"):
        unfit_video(video, info, "source")
    with pytest.raises(InputError, match=r"as an IMAGE batch .*leave the fit unconnected"):
        restored_image_batch(video, info)
    frames = RestoredFrames(video, info, "source")  # the writer's path needs no such room
    assert len(list(frames)) == len(frames)


# ---------------------------------------------------------------- the user's files

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder

    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root, tasks=["exo2ego"])
    return root


def _translate(models, *args):
    import wan_egoexo.cli.main as cli

    return cli.main(["translate", "--models-dir", str(models), "--width", "32", "--height", "32", "--frames", "5",
                     "--steps", "1", "--no-prompt-cache", *args])


def test_an_output_that_is_its_input_is_refused_before_anything_loads(tiny_models, tmp_path, capsys, monkeypatch):
    from wan_egoexo.tiny.models_folder import make_demo_clip

    clip = make_demo_clip(tmp_path / "x.mp4", frames=9, width=64, height=64)
    (tmp_path / "link.mp4").symlink_to("x.mp4")
    (tmp_path / "sub").mkdir()
    before = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    for out in ("x.mp4", "./link.mp4", str(tmp_path / "sub" / ".." / "x.mp4")):
        assert _translate(tiny_models, "--video", "x.mp4", "--out", out) == 1
        assert "is the input" in capsys.readouterr().err
    assert clip.read_bytes() == before


def test_a_batch_folder_holding_its_inputs_is_refused_and_a_subfolder_works(tiny_models, tmp_path, capsys):
    from wan_egoexo.tiny.models_folder import make_demo_clip

    folder = tmp_path / "clips"
    folder.mkdir()
    make_demo_clip(folder / "walk.mp4", frames=9, width=64, height=64)
    assert _translate(tiny_models, "--video", str(folder), "--out", str(folder)) == 1
    assert "holds 1 of the batch's inputs" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["walk.mp4"]
    for _ in range(2):  # the suggested subfolder: the second run skips, nothing is translated twice
        assert _translate(tiny_models, "--video", str(folder), "--out", str(folder / "translated")) == 0
    assert sorted(p.name for p in (folder / "translated").iterdir()) == ["walk_exo2ego.mp4"]
    assert sorted(p.name for p in folder.iterdir()) == ["translated", "walk.mp4"]


def test_an_unwritable_prompt_cache_is_a_warning(tmp_path, monkeypatch):
    import wan_egoexo.memory.prompt_cache as cache
    from wan_egoexo.tiny.text_encoder import build_tiny_umt5, save_umt5_fp8_scaled, train_tiny_spiece

    encoder = tmp_path / "umt5.safetensors"
    save_umt5_fp8_scaled(build_tiny_umt5(0), train_tiny_spiece(tmp_path), encoder)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "save_file", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeds, stats = cache.encode_prompts_cached(encoder, ["a prompt"], tmp_path / "cache", device="cpu")
    assert embeds.shape[0] == 1 and stats["misses"] == 1
    assert any("prompt cache: could not write" in str(w.message) and "No space left" in str(w.message)
               for w in caught)


def test_a_full_disk_under_the_trainers_metrics_is_a_write_error():
    import os

    from wan_egoexo_training.run.metrics_log import JsonlFile

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    log = JsonlFile("/dev/full", None)
    with pytest.raises(WriteError, match=r"/dev/full: cannot be written \(the disk is full"):
        log.write({"step": 1, "loss": 0.5})


def test_the_trainer_command_ends_with_a_named_error_on_a_full_disk(monkeypatch, capsys):
    import wan_egoexo_training.run.loop as loop
    from wan_egoexo_training import train

    def full(_config, callbacks=()):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl")

    monkeypatch.setattr(loop, "train", full)
    assert train.main(["--config", "exo2ego", "--output_dir", "/runs/x"]) == 1
    assert "error: /runs/x/metrics.jsonl: cannot be written (the disk is full" in capsys.readouterr().err


# ---------------------------------------------------------------- names and the In-Context limits

@pytest.mark.parametrize("prefix, rule", [
    ("x" * 300, r"filename_prefix: the part x{40}\.\.\. is 300 bytes long; expected at most 215"),
    ("video/" + "y" * 256 + "/clip", r"the part y{40}\.\.\. is 256 bytes long; expected at most 255"),
    ("a\0b", "holds a NUL character"),
])
def test_save_video_refuses_prefixes_the_file_system_cannot_hold(host, nodes, prefix, rule):  # noqa: F811
    images = torch.zeros((2, 32, 32, 3))
    with pytest.raises(InputError, match=rule):
        run(nodes, "WorldWanderSaveVideo", images, 8.0, prefix)


def test_in_context_refuses_more_frames_than_the_limit_before_encoding():
    from wan_egoexo.option_ranges import MAX_CLIP_FRAMES, check_clip_frames

    check_clip_frames(MAX_CLIP_FRAMES)
    with pytest.raises(InputError, match=r"source: 10,001 frames; expected at most 1001"):
        check_clip_frames(10_001)


def test_in_context_node_checks_the_limit_and_its_encode_stops_between_chunks(host, nodes, monkeypatch):  # noqa: F811
    from wan_egoexo.in_context.latents import encode_video
    from wan_egoexo.tiny.vae import build_tiny_vae

    with pytest.raises(InputError, match="expected at most 1001"):
        run(nodes, "WorldWanderInContext", object(), "exo2ego", torch.zeros((1005, 1, 1, 3)), "collaborative")
    vae = build_tiny_vae(0)
    calls = []

    class Stop(Exception):
        pass

    def interrupt():
        calls.append(1)
        if len(calls) == 3:  # the check before the encode, then one per encoder chunk
            raise Stop

    video = torch.zeros((1, 3, 17, 32, 32))
    with pytest.raises(Stop):
        encode_video(vae, video, interrupt=interrupt)
    assert len(calls) == 3
    calls.clear()
    latents = encode_video(vae, video, interrupt=lambda: calls.append(1))
    assert latents.shape[2] == 5 and len(calls) == 1 + 5  # one check before, one per latent frame's chunk
    assert torch.equal(latents, encode_video(vae, video))
