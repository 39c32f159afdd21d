"""Finding the training triplets (ego video, exo video, reference image, optional caption) in a folder.

Two layouts, recognised by their sub-folder names (case-insensitive):

- ours: ``ego/``, ``exo/``, ``reference/`` (``references/``, ``ref/`` too);
- the authors': ``First_Video/``, ``Third_Video/``, ``Reference_Image/``.

Videos are files (mp4, mov, ...) or folders of numbered frames; references are images. Entries are
paired by stem (``ego/walk01.mp4`` + ``exo/walk01/`` + ``reference/walk01.png``), or, with
``pairing="sorted"``, by sorted position as the authors' loader does. Captions are optional: one
``captions.json`` ({stem: text}) at the root, or ``<stem>.txt`` in ``captions/``, ``exo/`` or ``ego/``.
Everything that cannot be paired is returned as a fault (with its path), never silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from wan_egoexo.errors import InputError
from wan_egoexo.video.read_write import IMAGE_SUFFIXES, VIDEO_SUFFIXES

EGO_FOLDERS = ("ego", "first_video", "first")
EXO_FOLDERS = ("exo", "third_video", "third")
REFERENCE_FOLDERS = ("reference", "references", "ref", "reference_image")
CAPTION_SUFFIXES = (".txt", ".json")


def natural_key(name: str):
    """Order embedded numbers by value: clip2 before clip10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


@dataclass(frozen=True)
class Triplet:
    stem: str
    ego: Path
    exo: Path
    reference: Path | None = None
    caption: str | None = None


@dataclass(frozen=True)
class Fault:
    """One problem with the dataset: the path at fault and what is wrong / expected."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class Discovery:
    root: Path
    triplets: list[Triplet] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def _find_folder(root: Path, names) -> Path | None:
    children = {child.name.lower(): child for child in root.iterdir() if child.is_dir()}
    for name in names:
        if name in children:
            return children[name]
    return None


def _entries(folder: Path, suffixes, faults: list[Fault], kind: str) -> dict[str, Path]:
    """stem -> path of the usable entries of a folder; anything else becomes a fault."""
    entries: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if path.is_dir() and kind == "video":
            stem = path.name
        elif path.is_file() and path.suffix.lower() in suffixes:
            stem = path.stem
        elif path.is_file() and path.suffix.lower() in CAPTION_SUFFIXES:
            continue  # caption sidecars
        else:
            wanted = ("a video file (" + "/".join(VIDEO_SUFFIXES) + ") or a folder of frames") if kind == "video" \
                else "an image (" + "/".join(IMAGE_SUFFIXES) + ")"
            faults.append(Fault(path, f"is not {wanted}."))
            continue
        if stem in entries:
            faults.append(Fault(path, f"has the same stem {stem!r} as {entries[stem].name}; expected one entry "
                                      "per stem."))
            continue
        entries[stem] = path
    return entries


def _read_captions(root: Path, folders: list[Path], faults: list[Fault]) -> dict[str, str]:
    captions: dict[str, str] = {}
    json_path = root / "captions.json"
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError("not a mapping of stem to text")
            captions.update({str(k): v.strip() for k, v in data.items()})
        except (OSError, ValueError) as exc:
            faults.append(Fault(json_path, f"cannot be read ({exc}); expected a JSON object {{stem: caption}}."))
    for folder in reversed(folders):  # earlier folders win
        for text_file in folder.glob("*.txt"):
            try:
                captions[text_file.stem] = text_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                faults.append(Fault(text_file, f"cannot be read as UTF-8 text ({exc})."))
    return {stem: text for stem, text in captions.items() if text}


def find_triplets(root, need_reference: bool, pairing: str = "stem", use_captions: bool = True) -> Discovery:
    """Pair the ego/exo videos (and reference images) under ``root``. Unpaired entries are faults;
    a missing reference is a fault only when ``need_reference`` (the ego -> exo task)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"data.root: {root} is not a folder; expected a dataset folder with ego/ and exo/ "
                         "(or First_Video/ and Third_Video/) sub-folders.")
    ego_dir, exo_dir = _find_folder(root, EGO_FOLDERS), _find_folder(root, EXO_FOLDERS)
    ref_dir = _find_folder(root, REFERENCE_FOLDERS)
    if ego_dir is None or exo_dir is None:
        raise InputError(f"data.root: {root} has no {'ego/' if ego_dir is None else 'exo/'} folder; expected "
                         "ego/ + exo/ (+ reference/) or the authors' First_Video/ + Third_Video/ "
                         "(+ Reference_Image/).")
    found = Discovery(root)
    ego = _entries(ego_dir, VIDEO_SUFFIXES, found.faults, "video")
    exo = _entries(exo_dir, VIDEO_SUFFIXES, found.faults, "video")
    refs = _entries(ref_dir, IMAGE_SUFFIXES, found.faults, "image") if ref_dir is not None else {}
    if need_reference and ref_dir is None:
        found.faults.append(Fault(root, "has no reference/ (or Reference_Image/) folder; the ego2exo task needs a "
                                        "reference image for every pair."))
    caption_folders = [f for f in (root / "captions", exo_dir, ego_dir) if f.is_dir()]
    captions = _read_captions(root, caption_folders, found.faults) if use_captions else {}

    if pairing == "sorted":
        # plain sorted listing, exactly as the authors' loader pairs files
        ego_list, exo_list, ref_list = (sorted(d.values(), key=lambda p: p.name) for d in (ego, exo, refs))
        counts = {"ego": len(ego_list), "exo": len(exo_list)}
        if need_reference:
            counts["reference"] = len(ref_list)
        if len(set(counts.values())) > 1:
            found.faults.append(Fault(root, f"pairing by sorted position needs equal counts, got {counts}."))
            return found
        for i, (ego_path, exo_path) in enumerate(zip(ego_list, exo_list)):
            stem = ego_path.stem if ego_path.is_file() else ego_path.name
            ref = ref_list[i] if len(ref_list) == len(ego_list) else None
            found.triplets.append(Triplet(stem, ego_path, exo_path, ref, captions.get(stem)))
        return found

    for stem in sorted(set(ego) | set(exo), key=natural_key):
        if stem not in exo:
            found.faults.append(Fault(ego[stem], f"has no exo partner; expected {exo_dir}/{stem}.<video> or a frame "
                                                 f"folder {exo_dir}/{stem}/."))
            continue
        if stem not in ego:
            found.faults.append(Fault(exo[stem], f"has no ego partner; expected {ego_dir}/{stem}.<video> or a frame "
                                                 f"folder {ego_dir}/{stem}/."))
            continue
        if need_reference and stem not in refs and ref_dir is not None:
            found.faults.append(Fault(exo[stem], f"has no reference image; expected {ref_dir}/{stem}.png (or .jpg)."))
            continue
        found.triplets.append(Triplet(stem, ego[stem], exo[stem], refs.get(stem), captions.get(stem)))
    for stem, path in refs.items() if need_reference else ():
        if stem not in ego or stem not in exo:
            found.faults.append(Fault(path, f"reference image has no ego/exo pair named {stem!r}."))
    return found
