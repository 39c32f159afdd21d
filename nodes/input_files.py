"""File names the video nodes accept: only files inside ComfyUI's own folders.

A name is resolved the way ComfyUI's annotated file names are ("clip.mp4" and "clip.mp4 [input]" in
the input folder, "[output]" and "[temp]" in those folders), then every symbolic link is followed
and the real path must still lie inside the real folder. So "../../secret/x.mp4", an absolute path,
or a link in the input folder that points elsewhere are refused before anything is opened, on
ComfyUI's prompt validation and again when the node runs; so is any name without a video or image
suffix (an uploaded ``evil.m3u8`` playlist, say). ffmpeg then opens the file by its real path as a
``file:`` URL with protocol and format whitelists (wan_egoexo.video.containers).
"""

from __future__ import annotations

import os

from wan_egoexo.errors import InputError
from wan_egoexo.video.read_write import IMAGE_SUFFIXES, VIDEO_SUFFIXES

_ANNOTATIONS = {"[input]": "get_input_directory", "[output]": "get_output_directory", "[temp]": "get_temp_directory"}


def _folder_paths():
    import folder_paths  # noqa: PLC0415

    return folder_paths


def _split(name: str) -> tuple[str, str]:
    """(file name without annotation, the folder_paths function of its folder)."""
    for annotation, getter in _ANNOTATIONS.items():
        if name.endswith(f" {annotation}"):
            return name[: -len(annotation) - 1], getter
    return name, "get_input_directory"


def inside(path: str, folder: str) -> bool:
    """Whether ``path``, all links followed, lies inside ``folder`` (also resolved)."""
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([real, real_folder]) == real_folder and real != real_folder
    except ValueError:  # different drives on Windows
        return False


def input_file_problem(name, input_name: str = "video") -> str | None:
    """Why ``name`` is not a file inside ComfyUI's folders (a message naming the input), or None."""
    if not isinstance(name, str) or not name.strip():
        return f"{input_name}: no file selected; upload a video or pick one from the list."
    relative, getter = _split(name)
    folder = getattr(_folder_paths(), getter)()
    where = getter.replace("get_", "").replace("_directory", "")
    if os.path.isabs(relative) or os.path.splitdrive(relative)[0]:
        return f"{input_name}: {name!r} is an absolute path; expected a file name in ComfyUI's {where} folder."
    path = os.path.join(folder, relative)
    if not inside(path, folder):
        return (f"{input_name}: {name!r} resolves outside ComfyUI's {where} folder (through '..' or a symbolic "
                f"link); expected a file inside it.")
    suffix = os.path.splitext(relative)[1].lower()
    if suffix not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        return (f"{input_name}: {name!r} is not a video or image file ({suffix or 'no suffix'}); expected one of "
                f"{'/'.join(s.lstrip('.') for s in VIDEO_SUFFIXES + IMAGE_SUFFIXES)} (playlists and concat scripts "
                "are refused: they make ffmpeg read other files).")
    if not os.path.isfile(path):
        return f"{input_name}: {name!r} is not in ComfyUI's {where} folder; upload a video or pick one from the list."
    return None


def input_file_path(name, input_name: str = "video") -> str:
    """The real path of a file name inside ComfyUI's folders; InputError otherwise."""
    problem = input_file_problem(name, input_name)
    if problem:
        raise InputError(problem)
    relative, getter = _split(name)
    return os.path.realpath(os.path.join(getattr(_folder_paths(), getter)(), relative))


def input_videos() -> list[str]:
    """Video files in ComfyUI's input folder (top level, like the built-in loaders), links pointing out left out."""
    folder = _folder_paths().get_input_directory()
    if not os.path.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in VIDEO_SUFFIXES]
    return sorted(n for n in names if os.path.isfile(os.path.join(folder, n)) and inside(os.path.join(folder, n),
                                                                                          folder))


def check_output_path(path: str) -> None:
    """Refuse to write outside ComfyUI's output folder (e.g. through a linked subfolder)."""
    folder = _folder_paths().get_output_directory()
    if not inside(path, folder):
        raise InputError(f"filename_prefix: {path!r} resolves outside ComfyUI's output folder (through a symbolic "
                         "link); expected a prefix inside it.")
