"""Everything a translation run needs checked before any model file is opened.

``check_run`` looks at every clip of the run (one clip, or a batch's whole list), its output path
and container, the reference image, the LoRA file (its header or index, no tensor data) and every
numeric option, and raises one InputError that lists
every problem at once, each naming the input and the rule. What it learns on the way (each clip's
probe and planned fit, the reference's pixels) is handed to the run, so nothing is probed twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .batch import output_paths, reference_for
from ..video.clip_reader import plan_clip_fit
from ..video.clip_source import ClipSource, open_clip
from ..atomic_files import check_file_name
from ..errors import InputError, ModelFileError
from ..option_ranges import check_lora_strength
from ..sampling.sampler import SamplingSettings
from ..video.fit import FitInfo, FitOptions
from ..video.read_write import WRITABLE_SUFFIXES, read_image
from ..in_context.windows import WindowOptions

REFERENCE_MAX_SIDE = 4096  # a reference photo is averaged down to this before use (it ends at the clip's size)


@dataclass
class Job:
    """One clip to translate: its probed source, planned fit, output path and reference image."""

    source: ClipSource
    fit: FitInfo
    out: Path
    reference: np.ndarray | None


class Problems:
    """Problems found so far; ``raise_if_any`` turns them into one InputError listing them all."""

    def __init__(self):
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def check(self, function, *args, **kwargs):
        """Call ``function``; an InputError it raises becomes a problem (and None is returned)."""
        try:
            return function(*args, **kwargs)
        except InputError as exc:
            self.add(str(exc))
            return None

    def raise_if_any(self, what: str) -> None:
        if len(self.items) == 1:
            raise InputError(self.items[0])
        if self.items:
            lines = "\n".join(f"  - {item}" for item in self.items)
            raise InputError(f"{len(self.items)} problems with {what} (nothing was loaded):\n{lines}")


# ---------------------------------------------------------------- single checks

def check_output_file(path) -> None:
    """The output must be a writable file path whose suffix names a container H.264 goes into."""
    path = Path(path)
    check_file_name(path, "out")
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise InputError(f"out: {path} cannot hold H.264 video ({path.suffix or 'no suffix'}); expected a "
                         f"{'/'.join(WRITABLE_SUFFIXES)} file.")
    if path.is_dir():
        raise InputError(f"out: {path} is a folder; expected a video file path (or give --video a folder of clips "
                         "to translate a batch).")
    check_writable_folder(path.parent, "out")


def _same_file(a, b) -> bool:
    """Whether two paths name one file (links and relative paths resolved; hard links by inode)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_not_the_input(clip, out) -> None:
    """The output must not be the input: writing it would replace the clip with its translation."""
    if _same_file(clip, out):
        raise InputError(f"out: {out} is the input {clip} (the same file, through a link or another spelling); "
                         "writing it would replace the clip with its translation. Choose another --out.")


def check_batch_folder(clips, out) -> None:
    """A batch's output folder must hold none of its inputs: its outputs would be inputs of the next run.
    Refused rather than guessed at, before anything runs (see README, batches)."""
    folder = os.path.realpath(out)
    def holds(clip) -> bool:
        try:
            return os.path.commonpath([os.path.realpath(clip), folder]) == folder
        except ValueError:  # another drive (Windows)
            return False

    inside = [clip for clip in clips if holds(clip)]
    if inside:
        raise InputError(f"out: the output folder {out} holds {len(inside)} of the batch's inputs (e.g. {inside[0]}); "
                         "a second run would translate its own outputs. Give --out a folder that holds no input "
                         f"clips, e.g. {Path(out) / 'translated'}.")


def check_writable_folder(folder, name: str) -> None:
    """``folder`` exists and is writable, or can be created: its nearest existing parent is a writable folder."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{name}: {existing} is a file, so {folder} cannot be created; expected a folder path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{name}: {existing} is not writable; expected a folder this user can write to.")


def check_options(settings: SamplingSettings, fit: dict, windows: WindowOptions, lora_strength: float | None = None,
                  jobs: int = 1, problems: Problems | None = None) -> FitOptions | None:
    """Every numeric option, with the validators the run itself uses (one copy of each rule). ``fit``: the
    FitOptions fields; returns the FitOptions (None when invalid). Problems are added to ``problems``, or
    raised at once when none is given."""
    given = problems
    problems = problems if problems is not None else Problems()
    problems.check(settings.validate)
    options = problems.check(FitOptions, **fit)
    problems.check(windows.validate)
    if lora_strength is not None:
        problems.check(check_lora_strength, lora_strength)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        problems.add(f"jobs: {jobs!r} is invalid; expected a whole number of processes >= 1.")
    if given is None:
        problems.raise_if_any("the options")
    return options


def plan_clip(path, fit: FitOptions | None, input_fps: float | None) -> tuple[ClipSource, FitInfo] | None:
    """Probe a clip and plan its fit: readable, has video, has a frame at the start frame, fits in memory.
    Without valid fit options only the first of these is checked (and None returned)."""
    source = open_clip(path, input_fps)
    if fit is None:
        return None
    return source, plan_clip_fit(source, fit)


def check_lora(path) -> None:
    """The LoRA file is readable as one, judged from its header or index alone (the safetensors header
    and adapter metadata, or the checkpoint's zip directory, pickle and tensor views; no tensor
    data): a damaged LoRA is found before any model loads."""
    from ..lora.layouts import check_lora_file  # noqa: PLC0415  (torch)

    try:
        check_lora_file(path)
    except ModelFileError as exc:
        raise InputError(f"lora: {exc}") from None


def load_reference(task, path) -> np.ndarray | None:
    """The reference image (averaged down to at most REFERENCE_MAX_SIDE), or None when the task needs none."""
    if path is None:
        if task.uses_reference:
            raise InputError(f"reference: the {task.name} task needs a reference image of the subject (a full-body "
                             "view, e.g. from behind); give --reference IMAGE.")
        return None
    if not task.uses_reference:
        raise InputError(f"reference: the {task.name} task uses no reference image, but --reference {path} was "
                         "given; leave it out (or use --task ego2exo).")
    return read_image(path, max_side=REFERENCE_MAX_SIDE)


# ---------------------------------------------------------------- a whole run

def check_run(task, clips: list[Path], out, fit: FitOptions | None, input_fps: float | None = None, reference=None,
              batch: bool = False, shard: tuple[int, int] = (0, 1), problems: Problems | None = None,
              lora=None) -> tuple[list[Job], list[Path]]:
    """Check a run before anything loads; (jobs to run, clips skipped because their output exists).

    ``clips``: the one clip, or the batch's whole list (its outputs are named from the whole list, so
    every shard names them alike); ``out``: the output file, or the batch's output folder; ``problems``:
    those found so far (the options'), reported with the run's; ``lora``: the LoRA file, if any.
    """
    problems = problems if problems is not None else Problems()
    if lora is not None:
        problems.check(check_lora, lora)
    if batch:
        if Path(out).is_file():
            problems.add(f"out: {out} is a file; expected a folder for the outputs of a batch.")
        else:
            problems.check(check_writable_folder, out, "out")
            problems.check(check_batch_folder, clips, out)
        outputs = problems.check(output_paths, clips, Path(out), task.name) or {}
    else:
        problems.check(check_output_file, out)
        problems.check(check_not_the_input, clips[0], out)
        outputs = {clips[0]: Path(out)}
    index, count = shard
    mine = [clip for clip in clips[index::count] if clip in outputs]
    jobs, skipped = [], []
    references = {}
    for clip in mine:
        if batch and outputs[clip].exists():
            skipped.append(clip)
            continue
        planned = problems.check(plan_clip, clip, fit, input_fps)
        try:
            image_path = reference_for(clip, reference) if batch else reference
        except InputError as exc:  # the folder lacks this clip's image: not a missing --reference
            problems.add(str(exc))
            continue
        key = str(image_path)
        if key not in references:
            references[key] = problems.check(load_reference, task, image_path)
        if planned is not None:
            jobs.append(Job(planned[0], planned[1], outputs[clip], references[key]))
    problems.raise_if_any(f"{len(mine)} clip(s)" if batch else "the run")
    return jobs, skipped
