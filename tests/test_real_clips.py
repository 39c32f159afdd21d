"""Phone-style clips through the command line on the tiny real-layout model: the output lasts as long as
the input (variable rate, dropped frames, rotated, truncated), carries the source's audio for the span
it covers (copied or re-encoded), and keeps each batch clip's own audio. Durations and audio lengths
are measured from the written files with ffmpeg."""

import subprocess

import pytest

from media_tools import FFMPEG, constant_times, measure, make_clip
import wan_egoexo.cli.main as cli
from wan_egoexo.tiny.models_folder import build_tiny_models_folder

TINY = ["--width", "32", "--height", "32", "--steps", "1", "--fit", "pad"]
VFR_TIMES = constant_times(12, 30.0) + [0.4 + k * 0.125 + (0.02 if k % 2 else 0.0) for k in range(10)]  # 30, ~8 fps
DROPPED_TIMES = [i / 30 for i in range(36) if i % 5 != 4]  # 30 fps with every fifth frame missing


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root, tasks=["exo2ego"])
    return root


def translate(models, video, out, *extra):
    code = cli.main(["translate", "--task", "exo2ego", "--video", str(video), "--out", str(out), "--models-dir",
                     str(models), *TINY, *extra])
    assert code == 0
    return measure(out)


def span(times):
    return times[-1] + (times[-1] - times[-2]) - times[0]


@pytest.mark.parametrize("times", [VFR_TIMES, DROPPED_TIMES], ids=["variable_rate", "dropped_frames"])
@pytest.mark.parametrize("rate", ["source", "model"])
def test_output_lasts_as_long_as_the_input(models, tmp_path, times, rate):
    clip = make_clip(tmp_path / "in.mp4", times)
    out = translate(models, clip, tmp_path / "out.mp4", "--output-rate", rate)
    assert abs(out["video_seconds"] - span(times)) <= 1 / 8  # within one output frame
    assert (out["width"], out["height"]) == (64, 48)  # the input's size again
    if rate == "model":  # (how long the last frame lasts is not in the file: within a frame either way)
        assert abs(out["frames"] - span(times) * 8) <= 1


def test_audio_of_the_covered_span_is_kept_and_trimmed(models, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", constant_times(48, 24.0), audio="aac", audio_seconds=3.0)
    whole = translate(models, clip, tmp_path / "whole.mp4")
    assert whole["audio_codec"] == "aac"  # copied, not re-encoded
    assert abs(whole["audio_seconds"] - whole["video_seconds"]) <= 1 / 24 + 0.03  # cut to the video, not 3 s
    part = translate(models, clip, tmp_path / "part.mp4", "--frames", "9", "--start-frame", "12")
    assert part["video_seconds"] == pytest.approx(9 / 8, abs=1 / 24)
    assert abs(part["audio_seconds"] - part["video_seconds"]) <= 1 / 24 + 0.03
    silent = translate(models, clip, tmp_path / "silent.mp4", "--no-audio")
    assert silent["audio_seconds"] is None
    assert "with the source's audio" in capsys.readouterr().out


@pytest.mark.parametrize("suffix, codec, container", [(".mov", "pcm_s16le", ".mp4"), (".webm", "libvorbis", ".mp4"),
                                                       (".mov", "pcm_s16le", ".mov")])
def test_audio_that_cannot_go_into_the_container_is_re_encoded(models, tmp_path, suffix, codec, container):
    clip = make_clip(tmp_path / f"in{suffix}", constant_times(16, 8.0), audio=codec)
    out = translate(models, clip, tmp_path / f"out{container}")
    expected = "pcm_s16le" if container == ".mov" else "aac"  # mov takes PCM as it is; mp4 needs AAC
    assert out["audio_codec"] == expected
    assert abs(out["audio_seconds"] - 2.0) <= 0.05


def test_batch_keeps_each_clips_own_audio(models, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "short.mp4", constant_times(8, 8.0), audio="aac")
    make_clip(clips / "long.mp4", constant_times(20, 8.0), audio="aac")
    make_clip(clips / "mute.mp4", constant_times(8, 8.0))
    out = tmp_path / "out"
    assert cli.main(["translate", "--video", str(clips), "--out", str(out), "--models-dir", str(models), *TINY]) == 0
    assert measure(out / "short_exo2ego.mp4")["audio_seconds"] == pytest.approx(1.0, abs=0.05)
    assert measure(out / "long_exo2ego.mp4")["audio_seconds"] == pytest.approx(2.5, abs=0.05)
    assert measure(out / "mute_exo2ego.mp4")["audio_seconds"] is None


def test_rotated_clip_comes_out_upright_at_its_displayed_size(models, tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", constant_times(8, 8.0), width=64, height=48)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(rotated)], check=True)
    out = translate(models, rotated, tmp_path / "out.mp4", "--fit", "pad")
    assert (out["width"], out["height"]) == (48, 64)


def test_truncated_clip_is_translated_with_a_warning(models, tmp_path, capsys):
    whole = make_clip(tmp_path / "whole.mp4", constant_times(40, 8.0), width=96, height=64,
                      extra=["-crf", "0", "-movflags", "+faststart"])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = translate(models, cut, tmp_path / "out.mp4")
    assert 0.4 < out["video_seconds"] < 5.0
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "readable" in err


def test_broken_frame_rate_is_one_frame_not_thousands(models, tmp_path, capsys):
    slow = tmp_path / "slow.mp4"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x48:r=1/500", "-frames:v",
                    "1", "-c:v", "libx264", str(slow)], check=True)  # one frame, stated as 0.002 fps (500 s)
    out = translate(models, slow, tmp_path / "out.mp4", "--output-rate", "model")
    assert out["frames"] == 1
    assert "cannot be trusted" in capsys.readouterr().err


def test_python_api_translate_file(models, tmp_path):
    from wan_egoexo.models.model_files import find_model_files
    from wan_egoexo.pipeline.translation import translate_file
    from wan_egoexo.sampling.sampler import SamplingSettings
    from wan_egoexo.in_context.tasks import EXO2EGO
    from wan_egoexo.video.fit import FitOptions

    clip = make_clip(tmp_path / "in.mp4", VFR_TIMES, audio="aac")
    result = translate_file(find_model_files(EXO2EGO, models), "exo2ego", clip, tmp_path / "out.mp4",
                            fit=FitOptions(width=32, height=32, mode="pad", max_frames=None),
                            settings=SamplingSettings(steps=1), log=lambda *_: None)
    out = measure(tmp_path / "out.mp4")
    assert out["video_seconds"] == pytest.approx(result.seconds, abs=1e-3)
    assert abs(out["video_seconds"] - span(VFR_TIMES)) <= 1 / 8
    assert abs(out["audio_seconds"] - out["video_seconds"]) <= 0.05
