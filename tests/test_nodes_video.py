"""The video nodes on the stubbed ComfyUI host (see stub_comfy_host): file names stay inside ComfyUI's
folders with links resolved, validate_inputs takes only what it checks, and sound goes in and out as
ComfyUI's AUDIO."""

import inspect
import math
import os

import numpy as np
import pytest
import torch

from media_tools import constant_times, decoded_audio_seconds, make_clip
from stub_comfy_host import choices, host, nodes, run, schema  # noqa: F401  (fixtures)
from stub_comfy_host import models_dir  # noqa: F401
from wan_egoexo.errors import InputError

SIZE = dict(width=64, height=64, frames=9, fps=8.0, frame_stride=1, start_frame=0, fit="pad")


def test_validate_inputs_takes_only_the_inputs_it_checks(host, nodes):  # noqa: F811
    taken = inspect.getfullargspec(nodes["WorldWanderLoadVideo"].validate_inputs).args
    assert taken == ["cls", "video", "width", "height", "frames", "fps", "frame_stride"]
    required = {item.id: item for item in schema(nodes["WorldWanderLoadVideo"]).inputs}
    assert {"start_frame", "fit"} <= set(required) - set(taken)  # ComfyUI's own min/max and choice checks
    assert required["width"].max == required["height"].max == 2048
    assert required["frames"].max == 1001 and required["fps"].max == 60.0


@pytest.mark.parametrize("name, rule", [
    ("../secret.mp4", "resolves outside ComfyUI's input folder"),
    ("sub/../../secret.mp4", "resolves outside ComfyUI's input folder"),
    ("{secret}", "is an absolute path"),
    ("link.mp4", "resolves outside ComfyUI's input folder"),
    ("", "no file selected"),
])
def test_names_outside_the_input_folder_are_refused(host, nodes, tmp_path, name, rule):  # noqa: F811
    secret = host.input.parent / "secret.mp4"
    make_clip(secret, constant_times(9, 8.0))
    os.symlink(secret, host.input / "link.mp4")
    name = name.format(secret=secret)
    load = nodes["WorldWanderLoadVideo"]
    assert rule in load.validate_inputs(name)
    with pytest.raises(InputError, match=rule.replace("'", ".")):
        run(nodes, "WorldWanderLoadVideo", name, **SIZE)
    assert load.fingerprint_inputs(name) == ""  # nothing outside is even looked at
    assert "link.mp4" not in choices(load, "video")


def test_links_and_annotated_names_inside_the_folders_are_fine(host, nodes):  # noqa: F811
    make_clip(host.output / "earlier.mp4", constant_times(9, 8.0))
    os.symlink(host.input / "worldwander_input.mp4", host.input / "alias.mp4")
    load = nodes["WorldWanderLoadVideo"]
    assert load.validate_inputs("alias.mp4") is True
    assert load.validate_inputs("earlier.mp4 [output]") is True
    frames = run(nodes, "WorldWanderLoadVideo", "earlier.mp4 [output]", **SIZE)[0]
    assert frames.shape == (9, 64, 64, 3)


def test_load_video_returns_the_clips_audio_for_the_span_it_covers(host, nodes):  # noqa: F811
    make_clip(host.input / "talk.mp4", constant_times(48, 24.0), audio="aac")
    frames, fit, fps, audio = run(nodes, "WorldWanderLoadVideo", "talk.mp4", **{**SIZE, "start_frame": 12})
    assert fps == 8.0 and fit.real_frames == 9
    assert set(audio) == {"waveform", "sample_rate"} and audio["sample_rate"] == 48000
    waveform = audio["waveform"]
    assert waveform.dtype == torch.float32 and waveform.shape[:2] == (1, 1)
    assert waveform.shape[2] == round(9 / 8 * 48000)  # the 9 frames' 1.125 s, from the start frame
    # a 440 Hz tone: about 495 cycles in 1.125 s, its level about 1/8 (ffmpeg's sine source)
    crossings = int((np.diff(np.sign(waveform[0, 0].numpy())) != 0).sum())
    assert abs(crossings / 2 - 440 * 9 / 8) < 5
    silent = run(nodes, "WorldWanderLoadVideo", "worldwander_input.mp4", **SIZE)[3]
    assert silent is None  # the clip has no audio track


def test_save_video_writes_connected_audio_trimmed_to_the_video(host, nodes, tmp_path):  # noqa: F811
    frames = torch.rand(9, 32, 48, 3)
    tone = torch.sin(torch.arange(3 * 44100) / 44100 * 2 * math.pi * 220)[None, None].repeat(1, 2, 1) * 0.5
    result = run(nodes, "WorldWanderSaveVideo", frames, 8.0, "with_sound", {"waveform": tone, "sample_rate": 44100})
    saved = host.output / result.ui.as_dict()["images"][0]["filename"]
    assert decoded_audio_seconds(saved) == pytest.approx(9 / 8, abs=0.03)  # 3 s of sound cut to the video
    without = run(nodes, "WorldWanderSaveVideo", frames, 8.0, "without_sound")  # the old three inputs still work
    assert (host.output / without.ui.as_dict()["images"][0]["filename"]).is_file()
    with pytest.raises(InputError, match=r"^audio: the waveform holds NaN"):
        run(nodes, "WorldWanderSaveVideo", frames, 8.0, "bad", {"waveform": tone * float("nan"), "sample_rate": 44100})
    with pytest.raises(InputError, match=r"^audio: sample_rate 0 is invalid"):
        run(nodes, "WorldWanderSaveVideo", frames, 8.0, "bad", {"waveform": tone, "sample_rate": 0})


def test_save_video_refuses_a_linked_subfolder_pointing_out(host, nodes, tmp_path):  # noqa: F811
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, host.output / "escape")
    with pytest.raises(InputError, match="filename_prefix: .* resolves outside ComfyUI's output folder"):
        run(nodes, "WorldWanderSaveVideo", torch.rand(1, 32, 32, 3), 8.0, "escape/clip")
    assert list(outside.iterdir()) == []
