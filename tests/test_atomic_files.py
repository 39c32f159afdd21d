"""Atomic writes: the file appears whole or not at all, with the permissions a plain open() gives."""

import os

import numpy as np
import pytest

from wan_egoexo.atomic_files import atomic_path
from wan_egoexo.video_io import write_video


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_normal_permissions(tmp_path):
    video = write_video(tmp_path / "v.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8.0)
    with atomic_path(tmp_path / "x.bin") as temp:
        temp.write_bytes(b"abc")
    for path in (video, tmp_path / "x.bin"):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4", "x.bin"]


def test_failed_write_leaves_previous_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]
