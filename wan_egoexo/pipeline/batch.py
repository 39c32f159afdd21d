"""Translating many clips: a folder or a list file in, one mp4 per clip out.

Every clip gets its own output name, also when two share a stem (``walk.mp4`` and ``walk.webm``
become ``walk_mp4_<task>.mp4`` and ``walk_webm_<task>.mp4``); names that still clash are an error
naming both, before anything runs. Models load once; finished outputs are skipped (so a stopped
batch resumes); a clip that fails is recorded and the batch goes on; Ctrl-C stops after recording
what finished; a summary lists what failed and why. Clips are split over processes by shard
(``--shard i/n``, or torchrun's RANK / WORLD_SIZE), one process per GPU.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, WanEgoExoError
from ..video.read_write import IMAGE_SUFFIXES, VIDEO_SUFFIXES

_IMAGE_SUFFIXES = {s.lower() for s in IMAGE_SUFFIXES}
_VIDEO_SUFFIXES = {s.lower() for s in VIDEO_SUFFIXES}


def _is_frame_folder(path: Path) -> bool:
    """A folder of frames holds images and no videos; stray files (notes, thumbnails) do not change that."""
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in files) and \
        not any(p.suffix.lower() in _VIDEO_SUFFIXES for p in files)


def is_batch_source(path) -> bool:
    """A list file (.txt) or a folder of clips; a folder holding only images is one clip (its frames)."""
    path = Path(path)
    return path.suffix.lower() == ".txt" and path.is_file() or path.is_dir() and not _is_frame_folder(path)


def list_clips(source) -> list[Path]:
    """The clips of a batch source, sorted: video files and frame folders in a folder, or the paths
    listed one per line in a .txt file (relative to the file; blank lines and # comments skipped)."""
    source = Path(source)
    if source.suffix.lower() == ".txt":
        lines = [line.strip() for line in source.read_text().splitlines()]
        return [(source.parent / line).resolve() for line in lines if line and not line.startswith("#")]
    if not source.is_dir():
        raise InputError(f"video: {source} is neither a clip, a folder of clips nor a .txt list of clips.")
    clips = []
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in _VIDEO_SUFFIXES:
            clips.append(entry)
        elif entry.is_dir() and _is_frame_folder(entry):
            clips.append(entry)
    if not clips:
        raise InputError(f"video: the folder {source} holds no video files or frame folders.")
    return clips


def parse_shard(text: str | None) -> tuple[int, int]:
    """(index, count) from "i/n"; default from torchrun's RANK and WORLD_SIZE, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"shard: {text!r} is not of the form i/n (e.g. 0/4).") from None
    if not 0 <= index < count:
        raise InputError(f"shard: {text!r} needs 0 <= i < n.")
    return index, count


def output_path_for(clip: Path, out_dir: Path, task_name: str) -> Path:
    return Path(out_dir) / f"{clip.stem}_{task_name}.mp4"


def output_paths(clips, out_dir: Path, task_name: str) -> dict[Path, Path]:
    """The output of every clip: ``<stem>_<task>.mp4``, or ``<stem>_<extension>_<task>.mp4`` for clips whose
    stems clash. Names are compared case-insensitively (as macOS and Windows do); a clash that remains
    (the same file name in two folders of a list) is an InputError naming the clips."""
    clips = list(clips)
    default = {clip: output_path_for(clip, out_dir, task_name) for clip in clips}
    groups: dict[str, list[Path]] = {}
    for clip in clips:
        groups.setdefault(default[clip].name.casefold(), []).append(clip)
    outputs = {}
    for group in groups.values():
        for clip in group:
            kind = clip.suffix.lstrip(".").lower() or "frames"
            outputs[clip] = default[clip] if len(group) == 1 else Path(out_dir) / f"{clip.stem}_{kind}_{task_name}.mp4"
    seen: dict[str, Path] = {}
    clashes = []
    for clip in clips:
        key = outputs[clip].name.casefold()
        if key in seen:
            clashes.append(f"{seen[key]} and {clip} would both write {outputs[clip].name}")
        seen.setdefault(key, clip)
    if clashes:
        raise InputError("video: " + "; ".join(clashes) + "; rename one of each pair (or translate them in "
                         "separate batches).")
    return outputs


def reference_for(clip: Path, reference) -> Path | None:
    """The reference image for a clip: one file for all clips, or the image with the clip's stem in a folder."""
    if reference is None:
        return None
    reference = Path(reference)
    if reference.is_dir():
        for candidate in sorted(reference.iterdir()):
            if candidate.stem == clip.stem and candidate.suffix.lower() in _IMAGE_SUFFIXES:
                return candidate
        raise InputError(f"reference: no image named {clip.stem}.* in {reference} for the clip {clip}.")
    return reference


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    interrupted: Path | None = None  # the clip Ctrl-C stopped

    def summary(self) -> str:
        lines = [f"batch: {len(self.done)} translated, {len(self.skipped)} skipped (output exists), "
                 f"{len(self.failed)} failed"]
        if self.interrupted is not None:
            lines[0] += f"; interrupted (Ctrl-C) during {self.interrupted}, the clips after it were not started"
        lines += [f"  FAILED {clip}: {reason}" for clip, reason in self.failed]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted is not None else (1 if self.failed else 0)


def run_batch(jobs, translate_one, skipped=(), log=print) -> BatchReport:
    """Call ``translate_one(job)`` for each job (preflight.Job); never stops on a bad clip; Ctrl-C stops the
    batch with the report of what finished (the clip being translated is not written)."""
    report = BatchReport(skipped=list(skipped))
    jobs = list(jobs)
    for number, job in enumerate(jobs, 1):
        clip = job.source.path
        log(f"[{number}/{len(jobs)}] {clip} -> {job.out}")
        try:
            translate_one(job)
            report.done.append(clip)
        except KeyboardInterrupt:
            report.interrupted = clip
            break
        except WanEgoExoError as exc:
            report.failed.append((clip, str(exc)))
        except Exception as exc:  # a bad clip must not stop the batch; keep the cause for the summary
            report.failed.append((clip, f"{type(exc).__name__}: {exc}"))
            log(traceback.format_exc(limit=3))
    return report
