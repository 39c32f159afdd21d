"""Atomic writes: the file appears whole or not at all, with the permissions a plain open() gives."""

import os

import numpy as np
import pytest

from wan_egoexo.atomic_files import atomic_path
from wan_egoexo.video.read_write import write_video


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


_HOLD_A_WRITE = """
import sys, time
from pathlib import Path
from wan_egoexo.atomic_files import atomic_path
go, deadline = Path(sys.argv[2]), time.monotonic() + 120
with atomic_path(Path(sys.argv[1]), keep_suffix=True) as temp:
    temp.write_bytes(b"half a video")
    print(temp, flush=True)
    while not go.exists() and time.monotonic() < deadline:  # a write that lasts until the test says go
        time.sleep(0.05)
    temp.write_bytes(b"a whole video")
"""


def _start_writer(destination, go):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, str(destination), str(go)], cwd=repo,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_writers_partial_is_swept_by_the_next_write_and_a_live_ones_is_not(tmp_path):
    import signal

    go = tmp_path.parent / f"{tmp_path.name}.go"
    live, live_partial = _start_writer(tmp_path / "b.mp4", go)
    killed, killed_partial = _start_writer(tmp_path / "a.mp4", go)
    killed.send_signal(signal.SIGKILL)  # kill -9 in the middle of the write
    killed.wait()
    assert killed_partial.exists() and live_partial.exists() and killed_partial.name.endswith(".partial.mp4")
    write_video(tmp_path / "c.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8.0)  # the next run writing here
    assert not killed_partial.exists() and live_partial.exists()
    go.touch()
    assert live.wait(timeout=60) == 0
    assert (tmp_path / "b.mp4").read_bytes() == b"a whole video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mp4", "c.mp4"]


def test_tagged_partials_whose_writer_cannot_be_checked_go_only_after_a_day(tmp_path):
    import time

    from wan_egoexo.atomic_files import STALE_AFTER_S, remove_partials

    ours = [".x.mp4.wan_egoexo.otherhost_4026531836.123.456.abcd1234.partial.mp4",  # another machine's write
            ".y.bin.wan_egoexo.otherhost_4026531836.123.456.k3j4h5g6.old"]
    untagged = [".x.mp4.otherhost_4026531836.123.456.abcd1234.partial.mp4",  # a name from before the tag
                ".y.bin.k3j4h5g6.partial", ".z.old-77", ".bashrc.old-1", ".hidden.partial.notes"]
    for name in ours + untagged:
        (tmp_path / name).write_bytes(b"x")
    assert remove_partials(tmp_path) == []
    day_old = time.time() - STALE_AFTER_S - 60
    for name in ours + untagged:
        os.utime(tmp_path / name, (day_old, day_old))
    assert sorted(p.name for p in remove_partials(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(untagged)


def test_a_users_old_looking_files_and_unmarked_folders_survive_any_age(tmp_path):
    """issue 18: an output folder holding .bashrc.old-1 or a .photos.old-2020/ folder lost them."""
    import time

    from wan_egoexo.atomic_files import FOLDER_MARKER, remove_partials

    (tmp_path / ".bashrc.old-1").write_text("alias ll='ls -l'\n")
    photos = tmp_path / ".photos.old-2020"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    # a folder with this writer's tag in its name but not its marker inside is not provably ours either
    lookalike = tmp_path / ".album.wan_egoexo.otherhost_1.2.3.abcdefgh.partial"
    lookalike.mkdir()
    (lookalike / "b.jpg").write_bytes(b"jpeg")
    marked = tmp_path / ".run.wan_egoexo.otherhost_1.2.3.hgfedcba.partial"
    marked.mkdir()
    (marked / FOLDER_MARKER).write_text(marked.name)
    year_old = time.time() - 365 * 86400
    for path in (tmp_path / ".bashrc.old-1", photos, lookalike, marked):
        os.utime(path, (year_old, year_old))
    write_video(tmp_path / "out.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8.0)  # sweeps the folder first
    assert remove_partials(tmp_path) == []  # the write already took the one marked folder
    assert (tmp_path / ".bashrc.old-1").read_text() == "alias ll='ls -l'\n"
    assert (photos / "a.jpg").read_bytes() == b"jpeg" and (lookalike / "b.jpg").read_bytes() == b"jpeg"
    assert not marked.exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_partial(tmp_path):
    from wan_egoexo.atomic_files import _machine, _start_ticks, remove_partials

    ticks = _start_ticks(os.getpid())
    if ticks is None:
        pytest.skip("needs /proc/<pid>/stat")
    ours = tmp_path / f".a.bin.wan_egoexo.{_machine()}.{os.getpid()}.{ticks}.abcdefgh.partial"
    reused = tmp_path / f".b.bin.wan_egoexo.{_machine()}.{os.getpid()}.{ticks + 1}.abcdefgh.partial"
    ours.write_bytes(b"x")
    reused.write_bytes(b"x")
    assert remove_partials(tmp_path) == [reused] and ours.exists()


def test_long_and_nul_names_are_input_errors_and_long_names_still_write(tmp_path):
    from wan_egoexo.errors import InputError

    frames = np.zeros((3, 32, 32, 3), np.uint8)
    with pytest.raises(InputError, match=r"out: the name x{40}\.\.\. is 304 bytes long; expected at most 255"):
        write_video(tmp_path / ("x" * 300 + ".mp4"), frames, 8.0)
    with pytest.raises(InputError, match="NUL character"):
        write_video(tmp_path / "a\0b.mp4", frames, 8.0)
    longest = tmp_path / ("y" * 251 + ".mp4")  # 255 bytes: the temporary name beside it must fit too
    write_video(longest, frames, 8.0)
    assert longest.stat().st_size > 0 and sorted(p.name for p in tmp_path.iterdir()) == [longest.name]


def test_a_full_disk_is_a_write_error_naming_the_file(tmp_path, monkeypatch):
    import errno

    from wan_egoexo.errors import WriteError

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "x.bin"
    with pytest.raises(WriteError, match=r"x\.bin: cannot be written \(the disk is full"):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half")
            full()
    assert list(tmp_path.iterdir()) == []
