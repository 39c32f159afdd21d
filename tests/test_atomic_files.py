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


def test_partials_whose_writer_cannot_be_checked_go_only_after_a_day(tmp_path):
    import time

    from wan_egoexo.atomic_files import STALE_AFTER_S, remove_partials

    names = [".x.mp4.otherhost_4026531836.123.456.abcd1234.partial.mp4",  # another machine
             ".y.bin.k3j4h5g6.partial",  # a name from before owners were recorded
             ".z.old-77"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hidden.partial.notes").write_text("not ours")  # a user's file is never a leftover
    assert remove_partials(tmp_path) == []
    day_old = time.time() - STALE_AFTER_S - 60
    for name in names:
        os.utime(tmp_path / name, (day_old, day_old))
    assert sorted(p.name for p in remove_partials(tmp_path)) == sorted(names)
    assert [p.name for p in tmp_path.iterdir()] == [".hidden.partial.notes"]


def test_a_reused_pid_does_not_keep_a_dead_writers_partial(tmp_path):
    from wan_egoexo.atomic_files import _machine, _start_ticks, remove_partials

    ticks = _start_ticks(os.getpid())
    if ticks is None:
        pytest.skip("needs /proc/<pid>/stat")
    ours = tmp_path / f".a.bin.{_machine()}.{os.getpid()}.{ticks}.abcdefgh.partial"
    reused = tmp_path / f".b.bin.{_machine()}.{os.getpid()}.{ticks + 1}.abcdefgh.partial"  # same pid, other start
    ours.write_bytes(b"x")
    reused.write_bytes(b"x")
    assert remove_partials(tmp_path) == [reused] and ours.exists()
