"""Everything the nodes ask of the ComfyUI host: model folders, input/output folders, devices,
memory (host_memory.py: the WW_* models under ComfyUI's model management), progress and
cancelling. The host modules (folder_paths, comfy.*) are imported here, inside
the functions, so that importing the pack costs nothing and works outside ComfyUI; both the 2024
releases (folders "unet" / "clip") and 0.3.x ("diffusion_models" / "text_encoders") are served.
"""

from __future__ import annotations

import os

from wan_egoexo.atomic_files import check_filename_prefix, disk_errors
from wan_egoexo.comfy_interop import DIFFUSERS_LABEL, find_diffusers_folders, latent_preview_rgb
from wan_egoexo.errors import InputError, ModelFileError

from . import host_memory
from .host_memory import (  # noqa: F401  (the nodes' host API)
    load_to_device, make_room, offload_device, ready_transformer_for_sampling, release)

# Model folders in order of preference: the current name first, the 2024 name second.
TRANSFORMER_FOLDERS = ("diffusion_models", "unet")
TEXT_ENCODER_FOLDERS = ("text_encoders", "clip")
VAE_FOLDERS = ("vae",)
LORA_FOLDERS = ("loras",)


def _folder_paths():
    import folder_paths  # noqa: PLC0415

    return folder_paths


# ---------------------------------------------------------------- model files

def registered_folders(folder_names) -> list[str]:
    """Those of ``folder_names`` this ComfyUI knows. 0.3.x maps "unet"/"clip" to the new names itself;
    a 2024 server may know both when extra_model_paths.yaml adds the new name."""
    known = _folder_paths().folder_names_and_paths
    return [name for name in folder_names if name in known]


def model_choices(folder_names, with_diffusers: bool = True) -> list[str]:
    """File names in the known folders of ``folder_names``, then Diffusers pipeline folders."""
    folder_paths = _folder_paths()
    files = sorted({name for folder in registered_folders(folder_names)
                    for name in folder_paths.get_filename_list(folder)})
    if with_diffusers and "diffusers" in folder_paths.folder_names_and_paths:
        files += list(find_diffusers_folders(folder_paths.get_folder_paths("diffusers")))
    return files


def model_path(folder_names, name: str, input_name: str, with_diffusers: bool = True) -> str:
    """The full path of a model choice, or ModelFileError naming the input and where it was looked for."""
    folder_paths = _folder_paths()
    if not isinstance(name, str) or not name:
        raise InputError(f"{input_name}: no model selected; put the file in models/{folder_names[0]}/ "
                         "and press Refresh (R) in ComfyUI.")
    if with_diffusers and name.startswith(DIFFUSERS_LABEL) and "diffusers" in folder_paths.folder_names_and_paths:
        folders = find_diffusers_folders(folder_paths.get_folder_paths("diffusers"))
        if name in folders:
            return str(folders[name])
    for folder in registered_folders(folder_names):
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    where = ", ".join(f"models/{f}/" for f in folder_names) + (" or models/diffusers/" if with_diffusers else "")
    raise ModelFileError(name, f"is not in {where}, so {input_name} cannot load it.",
                         "a file listed in the node's menu (press Refresh (R) after adding files)")


# ---------------------------------------------------------------- input / output folders

def output_file(prefix: str, width: int, height: int, suffix: str) -> tuple[str, str, str]:
    """(full path, file name, subfolder) of a new numbered output file, the way SaveImage names them."""
    folder_paths = _folder_paths()
    check_filename_prefix(prefix)  # NUL or over-long names: an InputError, not a raw OSError/ValueError
    folder, base, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory(), width, height)
    with disk_errors(folder, "free some space in ComfyUI's output folder"):
        os.makedirs(folder, exist_ok=True)
    name = f"{base}_{counter:05}_{suffix}"
    return os.path.join(folder, name), name, subfolder


def temp_directory() -> str:
    return _folder_paths().get_temp_directory()


# ---------------------------------------------------------------- devices and memory

def torch_device():
    """The device ComfyUI computes on (respects --cpu, --directml, ...)."""
    import comfy.model_management as mm  # noqa: PLC0415

    return mm.get_torch_device()


def text_encoder_device():
    import comfy.model_management as mm  # noqa: PLC0415

    return mm.text_encoder_device()


def manage(module, kind: str) -> None:
    """Put a WW_* model (``kind`` "diffusion" or "vae") under ComfyUI's model management."""
    host_memory.manage(module, host_memory.load_device(kind), host_memory.offload_device(kind))


def release_cache() -> None:
    import comfy.model_management as mm  # noqa: PLC0415

    mm.soft_empty_cache()


# ---------------------------------------------------------------- progress, previews, cancel

def _previews_enabled() -> bool:
    try:
        from comfy.cli_args import LatentPreviewMethod, args  # noqa: PLC0415
    except ImportError:
        return False
    return args.preview_method != LatentPreviewMethod.NoPreviews


def interrupt_check():
    """ComfyUI's check for a pressed Cancel (raises its interrupt exception), as a callable for the core's
    long loops (the VAE encode's chunks); a no-op outside ComfyUI."""
    try:
        import comfy.model_management as mm  # noqa: PLC0415
    except ImportError:
        return lambda: None
    return mm.throw_exception_if_processing_interrupted


class StepReporter:
    """The sampler's per-step callback: stops at once when the user pressed Cancel, moves the
    progress bar, and sends a latent preview when the server was started with previews on.

    It uses comfy.utils.ProgressBar, not the V3 ``ComfyAPI.Execution.set_progress``: on 0.3.64 and
    0.33.0 alike the bar feeds the same per-node progress state that set_progress feeds, and it also
    sends the legacy "progress" event and checks Cancel, which set_progress does not. set_progress is a
    coroutine, and the core's sampling loop calls back synchronously; its synchronous form
    (``ComfyAPISync().execution``) exists only from 0.33.0 on (0.3.64's ComfyAPISync has no ``execution``)."""

    def __init__(self, total: int):
        import comfy.utils  # noqa: PLC0415
        from comfy.cli_args import args  # noqa: PLC0415

        self.bar = comfy.utils.ProgressBar(total)
        self.previews = _previews_enabled()
        self.preview_size = int(getattr(args, "preview_size", 512) or 512)

    def __call__(self, info) -> None:
        import comfy.model_management as mm  # noqa: PLC0415

        mm.throw_exception_if_processing_interrupted()
        preview = None
        if self.previews:
            from PIL import Image  # noqa: PLC0415

            preview = ("JPEG", Image.fromarray(latent_preview_rgb(info.denoised)), self.preview_size)
        self.bar.update_absolute(info.step, info.total, preview)
