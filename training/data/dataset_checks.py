"""Checking a triplet dataset before any model is loaded, reporting every fault at once.

Faults found: unpaired files (from pairing), unreadable videos / frame folders / images, clips shorter
than the frames a window needs, ego and exo clips of different lengths, frame folders whose frames
differ in size, and frames too small for the centre crop after the long-side resize. Each is reported
with its path; ``DatasetError`` lists them all. Videos are probed (header and frame count) in
threads, since ffmpeg runs in its own process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wan_egoexo.errors import InputError
from wan_egoexo.video.clip_source import probe_video
from wan_egoexo.video.read_write import list_frame_files

from .clips import crop_fits, frames_needed, resized_size
from .pairing import Discovery, Fault, Triplet


class DatasetError(InputError):
    """Every problem found in a dataset, each with its path."""

    def __init__(self, root, faults: list[Fault]):
        self.root = Path(root)
        self.faults = list(faults)
        lines = [f"{root}: {len(faults)} problem{'s' if len(faults) != 1 else ''} in the training data "
                 "(nothing was trained):"]
        lines += [f"  - {fault}" for fault in faults]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ClipGeometry:
    """What the checks learnt about one triplet: frame count shared by ego and exo, and frame sizes."""

    frames: int
    ego_size: tuple[int, int]
    exo_size: tuple[int, int]


@dataclass(frozen=True)
class WindowSettings:
    num_frames: int
    frame_stride: int
    height: int
    width: int
    resize_long: int


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}).") from None


def _probe(path: Path, faults: list[Fault]) -> tuple[int, int, int] | None:
    """(frames, width, height), or None after recording why the clip cannot be used."""
    try:
        if path.is_dir():
            files = list_frame_files(path)
            sizes = [_image_size(f) for f in files]
            odd = [(f, s) for f, s in zip(files, sizes) if s != sizes[0]]
            if odd:
                file, (w, h) = odd[0]
                faults.append(Fault(file, f"frame is {w}x{h} but {files[0].name} is {sizes[0][0]}x{sizes[0][1]}; "
                                          f"expected every frame of the folder at one size ({len(odd)} differ)."))
                return None
            return len(files), sizes[0][0], sizes[0][1]
        frames, _fps, width, height = probe_video(path)
        return frames, width, height
    except InputError as exc:
        message = str(exc)
        prefix = f"{path}: "
        faults.append(Fault(path, "unreadable: " + (message[len(prefix):] if message.startswith(prefix) else message)))
        return None


def check_triplet(triplet: Triplet, settings: WindowSettings,
                  need_reference: bool) -> tuple[list[Fault], ClipGeometry | None]:
    """The faults of one triplet, and its geometry when it has none."""
    faults: list[Fault] = []
    needed = frames_needed(settings.num_frames, settings.frame_stride)
    probes = {}
    for view, path in (("ego", triplet.ego), ("exo", triplet.exo)):
        probe = _probe(path, faults)
        if probe is None:
            continue
        frames, width, height = probe
        probes[view] = probe
        if frames < needed:
            faults.append(Fault(path, f"has {frames} frames; {settings.num_frames} frames at stride "
                                      f"{settings.frame_stride} need at least {needed}."))
        if not crop_fits(width, height, settings.resize_long, settings.width, settings.height):
            rw, rh = resized_size(width, height, settings.resize_long)
            faults.append(Fault(path, f"is {width}x{height}: with its long side resized to {settings.resize_long} it "
                                      f"is {rw}x{rh}, smaller than the {settings.width}x{settings.height} crop; "
                                      "expected footage with the crop's orientation and aspect ratio or wider."))
    if len(probes) == 2 and probes["ego"][0] != probes["exo"][0]:
        faults.append(Fault(triplet.exo, f"has {probes['exo'][0]} frames but its ego partner {triplet.ego} has "
                                         f"{probes['ego'][0]}; expected synchronised clips of equal length."))
    if need_reference:
        if triplet.reference is None:
            faults.append(Fault(triplet.exo, "has no reference image; the ego2exo task needs one per pair."))
        else:
            try:
                _image_size(triplet.reference)
            except InputError as exc:
                faults.append(Fault(triplet.reference, f"unreadable: {exc}"))
    if faults:
        return faults, None
    return [], ClipGeometry(probes["ego"][0], probes["ego"][1:], probes["exo"][1:])


def check_dataset(discovery: Discovery, settings: WindowSettings, need_reference: bool,
                  workers: int = 8) -> dict[str, ClipGeometry]:
    """Geometry of every triplet by stem; raises DatasetError listing every fault (pairing ones included)."""
    faults = list(discovery.faults)
    if not discovery.triplets and not faults:
        faults.append(Fault(discovery.root, "holds no ego/exo pairs."))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda t: check_triplet(t, settings, need_reference), discovery.triplets))
    geometry = {}
    for triplet, (triplet_faults, clip) in zip(discovery.triplets, results):
        faults.extend(triplet_faults)
        if clip is not None:
            geometry[triplet.stem] = clip
    if faults:
        raise DatasetError(discovery.root, faults)
    return geometry
