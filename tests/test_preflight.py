"""Every bad input of a run fails before any model file is opened (the loaders are replaced by ones that
fail the test if called), with an error that names the input and the rule; a batch lists every problem."""

import re
import subprocess

import numpy as np
import pytest
from PIL import Image

import wan_egoexo.video.host_memory as host_memory
import wan_egoexo.pipeline.translation as pipeline
from media_tools import FFMPEG, constant_times, make_clip
import wan_egoexo.cli.main as cli
from wan_egoexo.errors import InputError
from wan_egoexo.tiny.models_folder import build_tiny_models_folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root)
    return root


@pytest.fixture
def no_model_may_load(monkeypatch):
    """Every way the run opens a model file fails the test."""
    import safetensors
    import torch

    def opened(*args, **kwargs):
        raise AssertionError(f"a model file was opened before the inputs were checked: {args[:1]}")

    for name in ("load_vae", "load_transformer", "load_text_encoder", "encode_prompts_cached"):
        monkeypatch.setattr(pipeline, name, opened)
    monkeypatch.setattr(safetensors, "safe_open", opened)
    monkeypatch.setattr(torch, "load", opened)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "ten.mp4", constant_times(10, 8.0))


def run(models, *args):
    return cli.main(["translate", "--models-dir", str(models), "--width", "32", "--height", "32", *args])


def failure(models, capsys, *args) -> str:
    assert run(models, *args) == 1
    return capsys.readouterr().err


@pytest.mark.parametrize("case, args, message", [
    ("output container", ["--out", "{tmp}/x.avi"], r"out: \S+x\.avi cannot hold H\.264 video \(\.avi\)"),
    ("output under a file", ["--out", "{clip}/x.mp4"], r"out: \S+ten\.mp4 is a file, so \S+ cannot be created"),
    ("missing clip", ["--video", "{tmp}/gone.mp4"], r"gone\.mp4: no such video file"),
    ("start frame", ["--start-frame", "10"], r"start_frame: 10 is past the end of the video \(10 frames\)"),
    ("4k+1 frames", ["--frames", "48"], r"max_frames: 48 is not of the form 4k\+1"),
    ("grid width", ["--width", "100"], r"width: 100 is not a positive multiple of 32; nearest valid values: 96 or 128"),
    ("window overlap", ["--window", "4", "--overlap", "4"], r"window overlap: expected 0 <= overlap < window length"),
    ("stray reference", ["--reference", "{clip}"], r"reference: the exo2ego task uses no reference image"),
])
def test_bad_inputs_fail_before_any_model_loads(models, clip, tmp_path, capsys, no_model_may_load, case, args,
                                                message):
    values = {"tmp": tmp_path, "clip": clip}
    args = [arg.format(**values) for arg in args]
    defaults = {"--video": str(clip), "--out": str(tmp_path / "out.mp4")}
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]
    err = failure(models, capsys, *args)
    assert re.search(message, err), err
    assert not (tmp_path / "out.mp4").exists()


def test_clips_that_are_not_videos(models, tmp_path, capsys, no_model_may_load):
    audio_only = tmp_path / "voice.mp4"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio_only)], check=True)
    m4a = tmp_path / "voice.m4a"
    audio_only.rename(m4a)
    assert "voice.m4a: .m4a is not a video container" in failure(models, capsys, "--video", str(m4a), "--out",
                                                                 str(tmp_path / "o.mp4"))
    m4a.rename(audio_only)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(huge)
    out = str(tmp_path / "o.mp4")
    assert "voice.mp4: has no readable video stream (ffmpeg finds audio)" in failure(models, capsys, "--video",
                                                                                    str(audio_only), "--out", out)
    assert "garbage.mp4: cannot be read as a video" in failure(models, capsys, "--video", str(garbage), "--out", out)
    assert "huge.png: frames of 9000x9000 (81 Mpx) are larger than the 67 Mpx" in failure(
        models, capsys, "--video", str(huge), "--out", out)


def test_reference_checks(models, clip, tmp_path, capsys, no_model_may_load):
    out = str(tmp_path / "o.mp4")
    err = failure(models, capsys, "--task", "ego2exo", "--video", str(clip), "--out", out)
    assert "reference: the ego2exo task needs a reference image" in err
    fake = tmp_path / "me.png"
    fake.write_text("not an image")
    err = failure(models, capsys, "--task", "ego2exo", "--video", str(clip), "--out", out, "--reference", str(fake))
    assert "me.png: cannot be read as an image" in err


def test_a_reference_folder_without_a_clips_image_names_that_clip_only(models, tmp_path, capsys, no_model_may_load):
    clips, references = tmp_path / "clips", tmp_path / "references"
    clips.mkdir()
    references.mkdir()
    make_clip(clips / "a.mp4", constant_times(9, 8.0))
    make_clip(clips / "b.mp4", constant_times(9, 8.0))
    Image.new("RGB", (40, 30)).save(references / "a.png")
    err = failure(models, capsys, "--task", "ego2exo", "--video", str(clips), "--out", str(tmp_path / "out"),
                  "--reference", str(references))
    assert re.search(r"reference: no image named b\.\* in \S+references for the clip \S+b\.mp4", err), err
    assert "needs a reference image" not in err  # --reference was given: only b's image is missing


def test_a_reference_over_the_side_limit_is_averaged_down_to_it(tmp_path):
    from wan_egoexo.pipeline.preflight import REFERENCE_MAX_SIDE, load_reference
    from wan_egoexo.in_context.tasks import get_task

    pixels = np.random.default_rng(0).integers(0, 256, (6, REFERENCE_MAX_SIDE + 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    reference = load_reference(get_task("ego2exo"), tmp_path / "wide.png")
    means = pixels.reshape(3, 2, (REFERENCE_MAX_SIDE + 4) // 2, 2, 3).mean(axis=(1, 3))  # 2x2 boxes
    assert reference.shape == means.shape
    assert np.abs(reference - means).max() <= 0.5 + 1e-9


def test_a_batch_output_that_is_a_file_is_one_problem(models, tmp_path, capsys, no_model_may_load):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mp4", constant_times(9, 8.0))
    (tmp_path / "taken").write_text("a file")
    err = failure(models, capsys, "--video", str(clips), "--out", str(tmp_path / "taken"))
    assert re.search(r"out: \S+taken is a file; expected a folder for the outputs of a batch", err), err
    assert "problems" not in err and "cannot be created" not in err  # reported once, not twice


def test_every_problem_is_listed_at_once(models, clip, tmp_path, capsys, no_model_may_load):
    err = failure(models, capsys, "--video", str(clip), "--out", str(tmp_path / "x.gif"), "--start-frame", "99",
                  "--frames", "48", "--overlap", "20")
    assert "problems" in err
    for rule in ("max_frames: 48", "window overlap", "x.gif cannot hold H.264"):
        assert rule in err, err


def test_a_batch_lists_every_bad_clip_before_loading(models, tmp_path, capsys, no_model_may_load):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "good.mp4", constant_times(9, 8.0))
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    make_clip(clips / "short.mp4", constant_times(3, 8.0))
    err = failure(models, capsys, "--video", str(clips), "--out", str(tmp_path / "out"), "--start-frame", "5")
    assert "problems with 3 clip(s)" in err
    assert "broken.mp4: cannot be read as a video" in err
    assert "start_frame: 5 is past the end of the video (3 frames)" in err
    assert "good.mp4" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_numbers_are_finite_and_in_range_at_parse_time(models, clip, tmp_path, capsys):
    for flag, value in (("--jobs", "0"), ("--cfg", "nan"), ("--cfg", "inf"), ("--shift", "-inf"),
                        ("--steps", "0"), ("--fps", "1e9"), ("--lora-strength", "nan"), ("--input-fps", "0"),
                        ("--resident-blocks", "-1")):
        with pytest.raises(SystemExit) as stop:
            run(models, "--video", str(clip), "--out", str(tmp_path / "o.mp4"), f"{flag}={value}")
        assert stop.value.code == 2
        assert f"argument {flag}: '{value}' is invalid; expected a" in capsys.readouterr().err


def test_a_fit_that_needs_more_memory_than_is_free_is_refused_with_the_size(models, clip, tmp_path, capsys,
                                                                             no_model_may_load, monkeypatch):
    monkeypatch.setattr(host_memory, "available_memory", lambda: 1000)
    err = failure(models, capsys, "--video", str(clip), "--out", str(tmp_path / "o.mp4"))
    assert "out of memory" in err and "GiB but only 0.00 GiB are free" in err


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["translate", "--help"])
    text = capsys.readouterr().out
    blocks = {match.group(1): " ".join(match.group(2).split())  # each option's help, up to the next option
              for match in re.finditer(r"^  (--[\w-]+)[^\n]*?(?:\n|  )(.*?)(?=^  -|^\S|\Z)", text, re.M | re.S)}
    for option, default in (("--steps", "50"), ("--cfg", "5.0"), ("--shift", "5.0"), ("--seed", "1234"),
                            ("--fit", "crop"), ("--solver", "unipc"), ("--fps", "8.0"), ("--window", "13"),
                            ("--overlap", "4"), ("--output-rate", "source"), ("--jobs", "1"), ("--frames", "0")):
        assert blocks[option].count("default") == 1 and f"(default: {default})" in blocks[option], blocks[option]
    assert all(block.count("default") <= 1 for block in blocks.values())
    assert "--demo --video CLIP" in " ".join(text.split())


def test_the_python_api_checks_before_loading_too(models, clip, tmp_path, no_model_may_load):
    from wan_egoexo.models.model_files import find_model_files
    from wan_egoexo.pipeline.translation import translate_file
    from wan_egoexo.in_context.tasks import EXO2EGO
    from wan_egoexo.video.fit import FitOptions

    files = find_model_files(EXO2EGO, models)
    with pytest.raises(InputError, match=r"out: \S+clip\.avi cannot hold H\.264"):
        translate_file(files, "exo2ego", clip, tmp_path / "clip.avi", fit=FitOptions(width=32, height=32))
    with pytest.raises(InputError, match="start_frame: 10 is past the end"):
        translate_file(files, "exo2ego", clip, tmp_path / "clip.mp4", fit=FitOptions(width=32, height=32,
                                                                                    start_frame=10))


def test_a_damaged_lora_is_found_before_any_model_loads(models, clip, tmp_path, capsys, no_model_may_load):
    """From its header or index alone: an explicit --lora with the other problems, the default one of
    the models folder before anything loads."""
    import shutil

    from benchmarks import hostile_lora_files as hostile

    bad = hostile.redos_alpha_pattern_safetensors(tmp_path / "re.safetensors")
    err = failure(models, capsys, "--video", str(clip), "--out", str(tmp_path / "x.avi"), "--lora", str(bad))
    assert "2 problems with the run (nothing was loaded)" in err and "x.avi cannot hold H.264" in err
    assert f"lora: {bad}: lora_adapter_metadata: alpha_pattern has the key '((.*)*)*Z'" in err
    folder = tmp_path / "models"
    shutil.copytree(models, folder)
    for lora in (folder / "loras").glob("*.ckpt"):
        lora.write_bytes(lora.read_bytes()[:-200])  # an interrupted download: no zip directory
    err = failure(folder, capsys, "--video", str(clip), "--out", str(tmp_path / "o.mp4"))
    assert "loras/" in err and "is truncated or corrupted: its zip directory cannot be read" in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_the_python_api_checks_the_lora_before_loading(models, clip, tmp_path, no_model_may_load):
    import dataclasses

    from benchmarks import hostile_lora_files as hostile
    from wan_egoexo.in_context.tasks import EXO2EGO
    from wan_egoexo.models.model_files import find_model_files
    from wan_egoexo.pipeline.translation import translate_file
    from wan_egoexo.video.fit import FitOptions

    files = dataclasses.replace(find_model_files(EXO2EGO, models),
                                lora=hostile.bad_metadata_safetensors(tmp_path / "nan.safetensors", "lora_alpha 'nan'"))
    with pytest.raises(InputError, match=r"lora: \S+nan\.safetensors: lora_adapter_metadata: lora_alpha is \"nan\""):
        translate_file(files, "exo2ego", clip, tmp_path / "clip.mp4", fit=FitOptions(width=32, height=32))
