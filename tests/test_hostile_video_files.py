"""Issue 18: ffmpeg opens exactly the file that was named. Playlists, concat scripts and names that read as
ffmpeg URLs (``file:``, ``concat:``, ``subfile,,...:``) either are refused by name or read as the literal
file, from the core readers, the writer and the Load Video node alike; a link loop and a full disk are
told as such.

The attack clips are flat greys made by the ffmpeg that imageio-ffmpeg ships: the file a trick would
read instead is 128x64, the file actually named 64x48, so a reader's size says which one it opened.
"""

import os
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from stub_comfy_host import host, nodes, run  # noqa: F401  (fixtures)
from stub_comfy_host import models_dir  # noqa: F401
from nodes.schema import schema_inputs
from wan_egoexo.errors import InputError
from wan_egoexo.video.clip_source import open_clip
from wan_egoexo.video.read_write import read_video, write_video

FF = imageio_ffmpeg.get_ffmpeg_exe()
OTHER, NAMED = (128, 64), (64, 48)  # (width, height): what a trick reads instead, what the user named
PROTOCOL_NAMES = ["file:x.mp4", "concat:x.mp4", "subfile,,start,0,end,0,,:x.mp4"]


def grey_clip(path: Path, size, audio_seconds: float | None = None, fmt=("-c:v", "libx264")) -> Path:
    inputs = ["-f", "lavfi", "-i", f"color=c=gray:s={size[0]}x{size[1]}:r=8:d=1"]
    if audio_seconds:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={audio_seconds}",
                   "-c:a", "aac", "-shortest" if audio_seconds < 1 else "-y"]
    subprocess.run([FF, "-hide_banner", "-y", "-loglevel", "error", *inputs, *fmt, "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return path


def literal(folder: Path, name: str, size=NAMED, **kwargs) -> Path:
    """A clip saved under a name ffmpeg would otherwise take for a URL (made under a plain name, renamed)."""
    plain = grey_clip(folder / "plain.mp4", size, **kwargs)
    os.replace(plain, folder / name)
    return folder / name


@pytest.fixture
def attack(tmp_path):
    """A folder with x.mp4 (the file tricks point at), a playlist and a concat script naming files."""
    (tmp_path / "outside").mkdir()
    folder = tmp_path / "in"
    folder.mkdir()
    grey_clip(tmp_path / "outside" / "secret.ts", OTHER, fmt=("-c:v", "libx264", "-f", "mpegts"))
    grey_clip(folder / "x.mp4", OTHER)
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n../outside/secret.ts\n#EXT-X-ENDLIST\n"
    (folder / "evil.m3u8").write_text(playlist)
    (folder / "evil.m3u").write_text(playlist)
    (folder / "playlist.mp4").write_text(playlist)
    (folder / "concat.mp4").write_text("ffconcat version 1.0\nfile x.mp4\n")
    (folder / "concat.mkv").write_text("ffconcat version 1.0\nfile x.mp4\n")
    return folder


def test_the_attack_files_do_read_other_files_through_plain_ffmpeg(attack):
    """The reproduction: ffmpeg given these names as they are opens the listed / redirected file."""
    for name in ("evil.m3u8", "concat.mp4"):
        done = subprocess.run([FF, "-hide_banner", "-i", name, "-f", "null", "-"], cwd=attack, capture_output=True,
                              text=True)
        assert "128x64" in done.stderr, name
    literal(attack, "concat:x.mp4")
    done = subprocess.run([FF, "-hide_banner", "-i", "concat:x.mp4", "-f", "null", "-"], cwd=attack,
                          capture_output=True, text=True)
    assert "128x64" in done.stderr


@pytest.mark.parametrize("name", ["evil.m3u8", "evil.m3u"])
def test_playlists_are_refused_by_name(attack, name):
    with pytest.raises(InputError, match=r"is not a video container .*playlists and concat scripts are refused"):
        open_clip(attack / name)
    with pytest.raises(InputError, match="is not a video container"):
        read_video(attack / name)  # the trainer's reader


@pytest.mark.parametrize("name, rule", [
    ("concat.mp4", r"not an mp4/mov/webm/mkv/avi/gif container \(a playlist, a concat script"),
    ("concat.mkv", r"not an mp4/mov/webm/mkv/avi/gif container \(a playlist, a concat script"),
    ("playlist.mp4", "cannot be read as a video"),  # the mov demuxer claims it by its suffix, and fails
])
def test_a_playlist_or_concat_script_under_a_video_suffix_is_refused(attack, name, rule):
    with pytest.raises(InputError, match=rule):
        open_clip(attack / name)
    with pytest.raises(InputError, match=rule):
        read_video(attack / name)


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_names_that_look_like_protocols_read_the_literal_file(attack, name, monkeypatch):
    literal(attack, name)
    monkeypatch.chdir(attack)
    for path in (name, attack / name):  # relative (the CLI's --video NAME) and absolute
        source = open_clip(path)
        assert (source.width, source.height) == NAMED
        video = read_video(path)
        assert video.frames.shape[1:3] == (NAMED[1], NAMED[0])


def test_the_audio_reader_and_muxer_read_the_literal_file(attack, monkeypatch):
    from wan_egoexo.video.audio import SourceAudio, read_audio
    from wan_egoexo.video.probe import probe_video_file

    grey_clip(attack / "x.mp4", OTHER, audio_seconds=3.0)  # the file a trick would read: 3 s of sound
    named = literal(attack, "concat:x.mp4", audio_seconds=0.5)
    monkeypatch.chdir(attack)
    stream = probe_video_file("concat:x.mp4").audio
    assert stream is not None and stream.end == pytest.approx(0.5, abs=0.05)
    samples = read_audio("concat:x.mp4", stream, 0.0, 2.0)
    assert samples.seconds == pytest.approx(0.5, abs=0.05)  # ffmpeg stops at the literal file's end
    out = write_video(attack / "file:o.mp4", np.zeros((8, 32, 32, 3), np.uint8), 8.0,
                      audio=SourceAudio(str(named), 0.0, stream.codec))
    assert out.is_file() and not (attack / "o.mp4").exists()  # the output is the literal name too
    assert probe_video_file(out).audio.end == pytest.approx(0.5, abs=0.05)


def test_a_symbolic_link_loop_is_named_as_such(tmp_path):
    (tmp_path / "loop.mp4").symlink_to("loop.mp4")
    for reader in (open_clip, read_video):
        with pytest.raises(InputError, match="symbolic link loop"):
            reader(tmp_path / "loop.mp4")


def test_a_full_disk_is_not_an_empty_file():
    from wan_egoexo.video.write import _ArrayFrames, _encode

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    from wan_egoexo.errors import WriteError

    with pytest.raises(WriteError, match=r"out\.mp4: cannot be written \(the disk is full"):
        _encode(Path("/dev/full"), _ArrayFrames(np.zeros((4, 32, 32, 3), np.uint8)), 8.0, ["-crf", "17"],
                Path("out.mp4"))


# ---------------------------------------------------------------- the Load Video node

@pytest.mark.parametrize("name", ["evil.m3u8", "notes.txt", "clip.ffconcat", "noext"])
def test_load_video_takes_only_video_and_image_suffixes(host, nodes, name):  # noqa: F811
    (host.input / name).write_text("#EXTM3U\n")
    load = nodes["WorldWanderLoadVideo"]
    assert "is not a video or image file" in load.validate_inputs(name)
    with pytest.raises(InputError, match="is not a video or image file"):
        run(nodes, "WorldWanderLoadVideo", name, width=64, height=64, frames=9, fps=8.0, frame_stride=1,
            start_frame=0, fit="stretch")
    assert name not in schema_inputs(load)["video"].options


def test_load_video_refuses_a_concat_script_and_reads_protocol_names_literally(host, nodes):  # noqa: F811
    grey_clip(host.input / "x.mp4", OTHER)
    (host.input / "concat.mp4").write_text("ffconcat version 1.0\nfile x.mp4\n")
    size = dict(width=64, height=64, frames=9, fps=8.0, frame_stride=1, start_frame=0, fit="stretch")
    with pytest.raises(InputError, match="concat script"):
        run(nodes, "WorldWanderLoadVideo", "concat.mp4", **size)
    for name in PROTOCOL_NAMES:
        literal(host.input, name)
        info = run(nodes, "WorldWanderLoadVideo", name, **size)[1]
        assert (info.source_width, info.source_height) == NAMED, name
