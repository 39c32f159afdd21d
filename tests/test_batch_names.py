"""Batch outputs never clash (walk.mp4 and walk.webm), Ctrl-C prints what finished and exits non-zero,
and a folder of frames with a stray file is still one clip."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import wan_egoexo.cli.translate as cli_translate
from media_tools import constant_times, make_clip, measure
import wan_egoexo.cli.main as cli
from wan_egoexo.pipeline.batch import is_batch_source, list_clips, output_paths
from wan_egoexo.errors import InputError
from wan_egoexo.tiny.models_folder import build_tiny_models_folder

TINY = ["--width", "32", "--height", "32", "--steps", "1", "--fit", "pad"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root, tasks=["exo2ego"])
    return root


def test_clips_sharing_a_stem_get_distinct_outputs(models, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "walk.mp4", constant_times(8, 8.0))
    make_clip(clips / "walk.webm", constant_times(16, 8.0))
    make_clip(clips / "run.mp4", constant_times(8, 8.0))
    out = tmp_path / "out"
    assert cli.main(["translate", "--video", str(clips), "--out", str(out), "--models-dir", str(models), *TINY]) == 0
    assert "3 translated, 0 skipped" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["run_exo2ego.mp4", "walk_mp4_exo2ego.mp4", "walk_webm_exo2ego.mp4"]
    assert measure(out / "walk_webm_exo2ego.mp4")["video_seconds"] == pytest.approx(2.0, abs=1 / 8)
    assert measure(out / "walk_mp4_exo2ego.mp4")["video_seconds"] == pytest.approx(1.0, abs=1 / 8)
    # run again: every output exists, so nothing loads and every clip is reported as skipped
    assert cli.main(["translate", "--video", str(clips), "--out", str(out), "--models-dir", str(models), *TINY]) == 0
    text = capsys.readouterr().out
    assert "0 translated, 3 skipped (output exists), 0 failed" in text and "models loaded" not in text


def test_names_that_still_clash_are_an_error_naming_both(tmp_path):
    first, second = tmp_path / "a" / "walk.mp4", tmp_path / "b" / "walk.mp4"
    with pytest.raises(InputError, match=r"a/walk\.mp4 and \S+b/walk\.mp4 would both write walk_mp4_exo2ego\.mp4"):
        output_paths([first, second], tmp_path / "out", "exo2ego")
    # names differing only in case clash on macOS and Windows
    outputs = output_paths([Path("Walk.mp4"), Path("walk.MOV")], tmp_path, "exo2ego")
    assert sorted(p.name for p in outputs.values()) == ["Walk_mp4_exo2ego.mp4", "walk_mov_exo2ego.mp4"]


def test_ctrl_c_prints_the_summary_and_exits_non_zero(models, tmp_path, capsys, monkeypatch):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b", "c"):
        make_clip(clips / f"{name}.mp4", constant_times(8, 8.0))
    real = cli_translate.translate_clip

    def interrupted_at_b(models, source, out, *args, **kwargs):
        if source.path.name == "b.mp4":
            raise KeyboardInterrupt
        return real(models, source, out, *args, **kwargs)

    monkeypatch.setattr(cli_translate, "translate_clip", interrupted_at_b)
    out = tmp_path / "out"
    code = cli.main(["translate", "--video", str(clips), "--out", str(out), "--models-dir", str(models), *TINY])
    assert code == 130
    text = capsys.readouterr().out
    assert "batch: 1 translated, 0 skipped (output exists), 0 failed; interrupted (Ctrl-C) during" in text
    assert "b.mp4" in text
    assert sorted(p.name for p in out.iterdir()) == ["a_exo2ego.mp4"]


def test_single_clip_ctrl_c_exits_130(models, tmp_path, capsys, monkeypatch):
    clip = make_clip(tmp_path / "a.mp4", constant_times(8, 8.0))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_translate, "translate_clip", interrupted)
    code = cli.main(["translate", "--video", str(clip), "--out", str(tmp_path / "o.mp4"), "--models-dir",
                     str(models), *TINY])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_frame_folder_with_a_stray_file_is_one_clip(models, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        Image.fromarray(np.full((32, 32, 3), 20 * i % 255, np.uint8)).save(frames / f"{i:04d}.png")
    (frames / "notes.txt").write_text("take 3")
    assert not is_batch_source(frames)
    clips = tmp_path / "clips"
    (clips / "shot").mkdir(parents=True)
    for file in frames.iterdir():
        (clips / "shot" / file.name).write_bytes(file.read_bytes())
    make_clip(clips / "walk.mp4", constant_times(8, 8.0))
    assert is_batch_source(clips) and [p.name for p in list_clips(clips)] == ["shot", "walk.mp4"]
    out = tmp_path / "out.mp4"
    assert cli.main(["translate", "--video", str(frames), "--out", str(out), "--models-dir", str(models),
                     "--input-fps", "24", "--output-rate", "model", *TINY]) == 0
    assert measure(out)["frames"] == 4  # 12 frames at 24 fps: half a second at 8 fps
