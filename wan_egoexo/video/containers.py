"""Which files the pack hands to ffmpeg, and how, so that ffmpeg opens exactly the named file.

ffmpeg takes a file name as a URL: ``concat:a.mp4``, ``file:x.mp4`` or ``subfile,,start,0,end,0,,:x.mp4``
would open another file than the one so named, a playlist (``.m3u8``) or an ffconcat script (whatever
its suffix) reads the files it lists, and the image2 demuxer reads numbered siblings. So every path
goes to ffmpeg as ``file:`` and its absolute, resolved name (read as the literal file), with
``-protocol_whitelist file`` (no other protocol, not even one a demuxer opens by itself) and
``-format_whitelist`` of the demuxers for the containers in VIDEO_SUFFIXES (no hls, concat, image2 ...).
Names are checked first: a video must have one of VIDEO_SUFFIXES.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v")
# The demuxers (ffmpeg's names, as `ffmpeg -demuxers` lists them) those suffixes need: mov,mp4,... reads
# .mp4/.mov/.m4v, matroska,webm reads .mkv/.webm, avi and gif their own.
INPUT_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "gif")


def file_url(path) -> str:
    """``file:`` and the absolute path with every link resolved: ffmpeg reads it as that literal file."""
    return "file:" + os.path.realpath(os.path.abspath(os.fspath(path)))


def input_args(path) -> list[str]:
    """The ffmpeg arguments that open ``path`` as a video container of VIDEO_SUFFIXES and nothing else."""
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(INPUT_FORMATS), "-i", file_url(path)]


def check_video_name(path, what: str = "video") -> None:
    """A video file must carry one of VIDEO_SUFFIXES: playlists (.m3u8, .m3u), scripts (.ffconcat, .txt)
    and other names ffmpeg would treat as instructions are refused before ffmpeg sees them."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"{path}: {suffix or 'a name without suffix'} is not a video container this {what} "
                         f"reader opens; expected a {'/'.join(s.lstrip('.') for s in VIDEO_SUFFIXES)} file "
                         "(playlists and concat scripts are refused: they read other files).")


def check_not_a_loop(path, kind: str = "video") -> None:
    """A symbolic link loop is named as such (os.path.exists calls it missing)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link loop (it points back to itself); expected a readable "
                             f"{kind} file.") from None


def check_regular_file(path, kind: str = "video") -> None:
    """``path`` is an existing regular file; a link loop, a missing file and a folder are told apart."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link loop (it points back to itself); expected a readable "
                             f"{kind} file.") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputError(f"{path}: no such {kind} file; expected a readable {kind} file.") from None
        raise InputError(f"{path}: cannot be opened ({exc.strerror}); expected a readable {kind} file.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: is not a regular file; expected a readable {kind} file.")
