"""End-to-end on a real ComfyUI server (0.3.64, 0.33.0): WorldWander Load Video reads only inside
ComfyUI's input folder, ComfyUI's own range checks apply to its widgets (and its menu check from
0.33.0 on; on 0.3.64 the node refuses a value not in its menu itself), and its AUDIO reaches Save
Video's file."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .server import PromptRejected

CLIP = "worldwander_audio_clip.mp4"


@pytest.fixture(scope="module")
def clip_with_audio(comfy_server):
    import imageio_ffmpeg  # noqa: PLC0415

    path = comfy_server.input_dir / CLIP
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=s=96x64:r=24:d=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def load_and_save(video=CLIP, **widgets) -> dict:
    values = dict(video=video, width=64, height=64, frames=9, fps=8.0, frame_stride=1, start_frame=0, fit="pad")
    values.update(widgets)
    return {"1": {"class_type": "WorldWanderLoadVideo", "inputs": values},
            "2": {"class_type": "WorldWanderSaveVideo",
                  "inputs": {"images": ["1", 0], "fps": ["1", 2], "filename_prefix": "audio_check",
                             "audio": ["1", 3]}}}


def host_version(server) -> tuple:
    text = (server.comfy_dir / "comfyui_version.py").read_text()
    return tuple(int(part) for part in re.search(r'__version__ = "(\d+)\.(\d+)\.(\d+)', text).groups())


def rejection(server, prompt) -> str:
    with pytest.raises(PromptRejected) as rejected:
        server.queue_prompt(prompt)
    return str(rejected.value.body)


@pytest.mark.parametrize("name", ["../../../etc/hostname", "/etc/hostname", "sub/../../outside.mp4"])
def test_load_video_refuses_names_outside_the_input_folder(comfy_server, clip_with_audio, name):
    body = rejection(comfy_server, load_and_save(video=name))
    assert "outside ComfyUI's input folder" in body or "absolute path" in body


def test_load_video_refuses_a_link_pointing_out_of_the_input_folder(comfy_server, clip_with_audio, tmp_path):
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(clip_with_audio.read_bytes())
    link = comfy_server.input_dir / "innocent.mp4"
    os.symlink(secret, link)
    try:
        body = rejection(comfy_server, load_and_save(video="innocent.mp4"))
        assert "resolves outside ComfyUI's input folder" in body
    finally:
        link.unlink()


def test_comfyuis_own_ranges_apply_to_the_widgets(comfy_server, clip_with_audio):
    body = rejection(comfy_server, load_and_save(width=16384))
    assert "width: 16384 is out of range; expected 0..2048" in body
    body = rejection(comfy_server, load_and_save(start_frame=-5))
    assert "value_smaller_than_min" in body  # ComfyUI's own check, no longer switched off
    if host_version(comfy_server) > (0, 3, 64):
        body = rejection(comfy_server, load_and_save(fit="zoom"))
        assert "value_not_in_list" in body
    else:  # 0.3.64 checks only V1 list menus, not a V3 node's: the node names the value when it runs
        entry = comfy_server.run_prompt(load_and_save(fit="zoom"))
        assert entry["status"]["status_str"] == "error"
        assert "fit: 'zoom' is not one of the choices ['crop', 'pad', 'stretch']" in str(entry["status"]["messages"])


def test_audio_flows_from_load_video_to_the_saved_file(comfy_server, clip_with_audio):
    entry = comfy_server.run_prompt(load_and_save())
    assert entry["status"]["status_str"] == "success", comfy_server.log_tail()
    saved = entry["outputs"]["2"]["images"][0]
    path = comfy_server.output_dir / saved["subfolder"] / saved["filename"]
    import imageio_ffmpeg  # noqa: PLC0415

    pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f",
                          "s16le", "-ac", "1", "-ar", "48000", "-"], capture_output=True, check=True).stdout
    assert len(pcm) / 2 / 48000 == pytest.approx(9 / 8, abs=0.05)  # the 9 frames' span, not the clip's 2 s


def _upload(server, name: str, data: bytes) -> str:
    """POST a file to /upload/image as the frontend does; the name it was stored under."""
    import json  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    boundary = "----worldwander-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(server.url + "/upload/image", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["name"]


def test_an_uploaded_playlist_naming_a_clip_outside_is_refused(comfy_server, clip_with_audio, tmp_path):
    """issue 18: an HLS playlist uploaded as evil.m3u8 whose segment lies outside every ComfyUI folder was
    translated and could be downloaded from output/."""
    secret = tmp_path / "secret.ts"
    import imageio_ffmpeg  # noqa: PLC0415

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(clip_with_audio), "-c", "copy",
                    "-f", "mpegts", str(secret)], check=True)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n".encode()
    name = _upload(comfy_server, "evil.m3u8", playlist)
    body = rejection(comfy_server, load_and_save(video=name))
    assert "is not a video or image file (.m3u8)" in body


def test_an_uploaded_concat_script_named_mp4_fails_without_reading_its_file(comfy_server, clip_with_audio):
    name = _upload(comfy_server, "script.mp4", f"ffconcat version 1.0\nfile {CLIP}\n".encode())
    before = set(comfy_server.output_dir.rglob("*.mp4"))
    entry = comfy_server.run_prompt(load_and_save(video=name))
    status = entry.get("status", {})
    assert status.get("status_str") == "error"
    assert "concat script" in str(status.get("messages"))
    assert set(comfy_server.output_dir.rglob("*.mp4")) == before
