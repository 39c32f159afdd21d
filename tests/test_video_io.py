"""Video/image reading and writing against real small files made here (mp4, webm, gif, frame folders)."""

import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from wan_egoexo.video import read_write as video_io
from wan_egoexo.errors import InputError
from wan_egoexo.video.clip_source import count_frames, probe_video
from wan_egoexo.video.read_write import read_image, read_video, write_video


def moving_square_clip(frames=12, height=48, width=64):
    """Smooth gradient background (codec friendly) with a red square moving right 4 px per frame
    (even steps, so 4:2:0 chroma does not smear its left edge onto a neighbouring column)."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    clip[..., 1] = np.linspace(0, 200, width, dtype=np.float32)[None, None, :].round().astype(np.uint8)
    clip[..., 2] = np.linspace(50, 150, height, dtype=np.float32)[None, :, None].round().astype(np.uint8)
    for i in range(frames):
        clip[i, 16:32, 4 * i:4 * i + 16] = (230, 20, 20)
    return clip


def square_column(frame):
    """Left edge of the red square, found from the pixels."""
    red = (frame[..., 0] > 150) & (frame[..., 1] < 100)
    return int(np.nonzero(red.any(axis=0))[0][0])


def encode_with_imageio(path, clip, fps, codec, pix_fmt="yuv420p", extra=()):
    """Independent writer (imageio-ffmpeg directly) for formats write_video does not produce."""
    writer = imageio_ffmpeg.write_frames(str(path), (clip.shape[2], clip.shape[1]), fps=fps, codec=codec,
                                         pix_fmt_out=pix_fmt, quality=None, macro_block_size=1,
                                         output_params=list(extra), ffmpeg_log_level="error")
    writer.send(None)
    for frame in clip:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def test_mp4_round_trip_keeps_count_size_fps_and_pixels(tmp_path):
    clip = moving_square_clip()
    path = write_video(tmp_path / "clip.mp4", clip, fps=12)
    video = read_video(path)
    assert video.frames.shape == clip.shape and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(12)
    assert video.source == str(path)
    error = np.abs(video.frames.astype(int) - clip.astype(int))
    assert error.mean() < 3
    assert [square_column(f) for f in video.frames] == [4 * i for i in range(len(clip))]
    assert probe_video(path) == (len(clip), pytest.approx(12), 64, 48)
    assert count_frames(path) == len(clip)


def test_read_webm_and_max_frames(tmp_path):
    clip = moving_square_clip(frames=10)
    path = encode_with_imageio(tmp_path / "clip.webm", clip, 24, "libvpx-vp9", extra=["-crf", "10", "-b:v", "0"])
    video = read_video(path)
    assert video.frames.shape == clip.shape and video.fps == pytest.approx(24)
    assert np.abs(video.frames.astype(int) - clip.astype(int)).mean() < 4
    first = read_video(path, max_frames=4)
    assert first.frames.shape[0] == 4
    np.testing.assert_array_equal(first.frames, video.frames[:4])


def test_read_gif_frame_rate_from_metadata(tmp_path):
    # Flat pure colours survive the GIF palette up to its 3-bit red / 2-bit blue levels.
    clip = np.zeros((6, 24, 32, 3), np.uint8)
    for i in range(6):
        clip[i, 4:12, 4 * i:4 * i + 8] = (255, 0, 0)
        clip[i, 16:, :] = (0, 0, 255)
    path = encode_with_imageio(tmp_path / "clip.gif", clip, 10, "gif", pix_fmt="rgb8")
    video = read_video(path)
    assert video.fps == pytest.approx(10)
    np.testing.assert_allclose(video.frames, clip, atol=4)


def test_rotation_metadata_is_applied(tmp_path):
    clip = moving_square_clip(frames=3)
    plain = write_video(tmp_path / "plain.mp4", clip, fps=8)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90",
                    "-i", str(plain), "-c", "copy", str(rotated)], check=True)
    frames = read_video(rotated).frames
    assert frames.shape == (3, 64, 48, 3)
    # A display rotation of 90 degrees turns the picture counter-clockwise (chroma is upsampled after the
    # turn, so a few pixels differ by one level).
    np.testing.assert_allclose(frames, np.rot90(read_video(plain).frames, k=1, axes=(1, 2)), atol=1, rtol=0)
    assert probe_video(rotated)[2:] == (48, 64)


def test_frame_folder_natural_order_and_fps(tmp_path):
    names = ["f10.png", "f2.png", "f1.png", "f9.jpg", "notes.txt"]
    values = {"f1.png": 10, "f2.png": 60, "f9.jpg": 120, "f10.png": 200}
    for name in names:
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not a frame")
            continue
        Image.fromarray(np.full((20, 30, 3), values[name], np.uint8)).save(tmp_path / name, quality=95)
    video = read_video(tmp_path, frame_folder_fps=12.5)
    assert video.fps == 12.5 and video.frames.shape == (4, 20, 30, 3)
    means = video.frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(means, [10, 60, 120, 200], atol=2)
    assert read_video(tmp_path, max_frames=2).frames.shape[0] == 2
    assert probe_video(tmp_path, frame_folder_fps=12.5) == (4, 12.5, 30, 20)


def test_frame_folder_size_mismatch_names_the_odd_file(tmp_path):
    for i, size in enumerate([(30, 20), (30, 20), (31, 20), (30, 20)]):
        Image.new("RGB", size).save(tmp_path / f"{i:03d}.png")
    with pytest.raises(InputError, match=r"002\.png.*31x20.*000\.png.*30x20"):
        read_video(tmp_path)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(InputError, match="holds no frames"):
        read_video(tmp_path)
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="nope.mp4.*no such"):
        read_video(missing)
    with pytest.raises(InputError, match="nope.mp4"):
        probe_video(missing)


def test_corrupt_truncated_and_videoless_files(tmp_path, caplog):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="garbage.mp4.*cannot be read"):
        read_video(garbage)

    # A truncated but playable file gives what is readable, with a warning that says how much.
    noisy = np.random.default_rng(1).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)  # frames bigger than the index
    whole = write_video(tmp_path / "whole.mp4", noisy, fps=8).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) * 6 // 10])
    with caplog.at_level("WARNING"):
        frames = read_video(truncated).frames
    assert 3 <= len(frames) < 12
    assert re.search(r"truncated\.mp4: .*truncated.*only the first [\d.]+ s \(\d+ frames\)", caplog.text)
    header_only = tmp_path / "header_only.mp4"
    header_only.write_bytes(whole[:200])
    with pytest.raises(InputError, match="header_only.mp4.*(truncated|cannot be read|no readable video)"):
        read_video(header_only)

    no_frames = tmp_path / "no_frames.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    "color=c=red:s=32x32:r=8", "-frames:v", "0", str(no_frames)], check=True)
    with pytest.raises(InputError, match="no_frames.mp4.*(0 frames|no readable video stream)"):
        read_video(no_frames)


def test_read_image_alpha_grey_and_16bit(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = np.array([0, 64, 128, 255])[:, None]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    expected = np.round(rgba[..., :3].astype(float) * rgba[..., 3:4] / 255)
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), expected, atol=1)

    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)

    deep = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png")[..., 0], deep / 257.0, atol=1)

    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="fake.png"):
        read_image(tmp_path / "fake.png")


def test_write_video_odd_size_pads_by_edge_copy(tmp_path):
    clip = moving_square_clip(frames=5, height=33, width=45)
    path = write_video(tmp_path / "odd.mp4", clip, fps=8)
    frames = read_video(path).frames
    assert frames.shape == (5, 34, 46, 3)
    assert np.abs(frames[:, :33, :45].astype(int) - clip.astype(int)).mean() < 4
    # The extra row/column repeat the border instead of rescaling the picture.
    assert np.abs(frames[:, 33].astype(int) - frames[:, 32].astype(int)).mean() < 3
    assert np.abs(frames[:, :, 45].astype(int) - frames[:, :, 44].astype(int)).mean() < 3


def test_write_video_float_input_and_parent_folders(tmp_path):
    clip = moving_square_clip(frames=4)
    from_uint8 = read_video(write_video(tmp_path / "a.mp4", clip, fps=8)).frames
    from_float = read_video(write_video(tmp_path / "deep" / "er" / "b.mp4", clip / 255.0, fps=8)).frames
    np.testing.assert_array_equal(from_uint8, from_float)
    with pytest.raises(InputError, match=r"frames.*-1.*0\.\.1"):
        write_video(tmp_path / "c.mp4", clip / 127.5 - 1.0, fps=8)
    with pytest.raises(InputError, match=r"frames: shape"):
        write_video(tmp_path / "c.mp4", clip[0], fps=8)
    with pytest.raises(InputError, match=r"c\.webm.*\.mp4"):
        write_video(tmp_path / "c.webm", clip, fps=8)
    with pytest.raises(InputError, match="crf"):
        write_video(tmp_path / "c.mp4", clip, fps=8, crf=60)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "c.mp4", clip, fps=0)


def test_interrupted_write_leaves_no_file(tmp_path):
    final = tmp_path / "out.mp4"
    final.write_bytes(b"previous good file")
    clip = moving_square_clip(frames=4)

    class Interrupted:  # frames streamed into ffmpeg, Ctrl-C after the second
        height, width = clip.shape[1:3]

        def __len__(self):
            return len(clip)

        def __iter__(self):
            yield from clip[:2]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(final, Interrupted(), fps=8)
    assert final.read_bytes() == b"previous good file"
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
