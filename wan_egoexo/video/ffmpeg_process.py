"""Running the ffmpeg binary that imageio-ffmpeg ships as a child process with bounded costs.

stdout is a pipe the caller reads as it goes (frames, packet lines); stderr is read on a thread so
ffmpeg never blocks on it, and only its head (the stream report) and tail (the errors) are kept, so
a file that makes ffmpeg print millions of warnings costs a fixed amount of memory. Leaving the
``with`` block ends the process, whatever happened, so no ffmpeg outlives a failed or cancelled read
(or write: a writer feeds ffmpeg's stdin instead, and its stdout is discarded).
"""

from __future__ import annotations

import collections
import subprocess
import threading

from ..errors import InputError

HEAD_LINES = 400  # the stream report of a file with many streams fits
TAIL_LINES = 200

# ffmpeg's stderr is long; these phrases in it say what is wrong in words a user can act on.
_PROBLEMS = (
    ("not on whitelist", "it is not an mp4/mov/webm/mkv/avi/gif container (a playlist, a concat script or "
                         "another format that reads other files is refused)"),
    ("No space left on device", "the disk is full (no space left on device)"),
    ("Read-only file system", "the folder is on a read-only file system"),
    ("does not contain any stream", "it has no video stream, or one with 0 frames"),
    ("partial file", "the file is truncated"),
    ("moov atom not found", "the file is truncated or was never finished (no index)"),
    ("Invalid data found", "ffmpeg finds no video data it can decode"),
    ("No such file", "the file cannot be opened"),
    ("Permission denied", "the file cannot be opened (permission denied)"),
    ("Cannot allocate memory", "ffmpeg ran out of memory"),
    ("Picture size", "its frame size is invalid or too large"),
    ("Output file is empty", "no frame could be read from it"),
    ("Input/output error", "the file could not be read to its end (damaged or truncated)"),
)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # noqa: PLC0415

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_problem(text: str) -> str:
    """The cause of an ffmpeg failure in a user's words, from its stderr."""
    for phrase, problem in _PROBLEMS:
        if phrase in text:
            return problem
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "===" not in line and not line.lstrip().startswith(("Last message", "frame="))]
    return lines[-1][:300] if lines else "ffmpeg failed without a message"


class FfmpegProcess:
    """``with FfmpegProcess(args, path) as ff:`` read ``ff.stdout``; ``ff.stderr_text()`` after ``ff.wait()``.

    ``on_line`` is called (on the reader thread) with every stderr line, for callers that follow
    ffmpeg's per-frame log (showinfo).
    """

    def __init__(self, args: list[str], path, on_line=None, stdin: bool = False):
        self.path = path
        self._head: list[str] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lines = 0
        self._on_line = on_line
        try:
            self.process = subprocess.Popen(
                [ffmpeg_exe(), "-hide_banner", "-y", "-nostdin", *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdin else subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise InputError(f"{path}: cannot start ffmpeg ({exc}); reinstall imageio-ffmpeg.") from None
        self.stdout = self.process.stdout
        self.stdin = self.process.stdin  # only with stdin=True (a writer): stdout is then discarded
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        try:
            for raw in self.process.stderr:
                self._keep(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):  # the pipe was closed under us: ffmpeg is gone, nothing more to read
            return

    def _keep(self, line: str) -> None:
        self._lines += 1
        if len(self._head) < HEAD_LINES:
            self._head.append(line)
        else:
            self._tail.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def stderr_text(self) -> str:
        skipped = self._lines - len(self._head) - len(self._tail)
        middle = [f"... {skipped} lines ..."] if skipped > 0 else []
        return "\n".join(self._head + middle + list(self._tail))

    def wait(self, timeout: float) -> int:
        """Wait for ffmpeg to exit (stderr fully read); a timeout is an InputError naming the file."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise InputError(f"{self.path}: ffmpeg did not finish within {timeout:.0f} s; expected a readable "
                             "video file.") from None
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> "FfmpegProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self._reader.join(timeout=10)  # ffmpeg is gone: its stderr ends, and so does the thread
        for pipe in (self.process.stdout, self.process.stdin):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a writer's unflushed frames: ffmpeg is gone
                    pass
        if not self._reader.is_alive():
            self.process.stderr.close()

