"""Finding the four files a translation needs: in a ComfyUI models folder (the names and
folders ComfyUI's own Wan2.2 template uses) or a Diffusers folder, plus the task's LoRA.
A missing file is reported with its expected folder and where to download it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WanEgoExoError
from ..in_context.tasks import Task

MODELS_ENV = "WAN_EGOEXO_MODELS"

_HF = "https://huggingface.co"
_WAN22 = f"{_HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
_WAN21 = f"{_HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
_LORAS = f"{_HF}/QuintonSung/WorldWander/resolve/main"


@dataclass(frozen=True)
class Wanted:
    role: str
    folders: tuple[str, ...]  # ComfyUI model folders searched, first is the canonical one
    names: tuple[str, ...]  # accepted file names, preferred first
    url: str


TRANSFORMER = Wanted("transformer", ("diffusion_models", "unet"),
                     ("wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_ti2v_5B_bf16.safetensors"),
                     f"{_WAN22}/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors")
VAE = Wanted("vae", ("vae",), ("wan2.2_vae.safetensors",), f"{_WAN22}/vae/wan2.2_vae.safetensors")
TEXT_ENCODER = Wanted("text_encoder", ("text_encoders", "clip"),
                      ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors"),
                      f"{_WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")


def lora_wanted(task: Task, domain: str = "realworld") -> Wanted:
    """The released WorldWander LoRA for a task ("realworld" or "synthetic" footage)."""
    name = f"wan2-2_lora_{task.authors_name}_{domain}"
    return Wanted("lora", ("loras",), (f"{name}.ckpt", f"{name}.safetensors"), f"{_LORAS}/{name}.ckpt")


@dataclass
class ModelFiles:
    transformer: Path
    vae: Path
    text_encoder: Path
    lora: Path | None


class MissingModelFiles(WanEgoExoError, FileNotFoundError):
    """Lists every missing file with its expected folder and download address."""

    def __init__(self, missing: list[tuple[Wanted, Path]]):
        self.missing = missing
        lines = ["Model files are missing:"]
        for wanted, folder in missing:
            lines.append(f"  - {wanted.names[0]} ({wanted.role}): put it in {folder}/")
            lines.append(f"      download: {wanted.url}")
        lines.append(f"Point --models-dir (or ${MODELS_ENV}) at a ComfyUI 'models' folder, "
                     "or use --diffusers for a Diffusers-format Wan2.2-TI2V-5B folder.")
        super().__init__("\n".join(lines))


def default_models_dir() -> Path | None:
    """$WAN_EGOEXO_MODELS, else ./models, else ~/ComfyUI/models (the first that exists)."""
    candidates = [os.environ.get(MODELS_ENV), "models", "~/ComfyUI/models"]
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser()
    return None


def _models_root(models_dir: Path) -> Path:
    """Accept the ComfyUI root as well as its models/ folder."""
    return models_dir / "models" if (models_dir / "models").is_dir() and not (models_dir / "vae").is_dir() else models_dir


def find_in_models_dir(models_dir: Path, wanted: Wanted) -> Path | None:
    root = _models_root(models_dir)
    for folder in wanted.folders:
        for name in wanted.names:
            candidate = root / folder / name
            if candidate.is_file():
                return candidate
    return None


def find_model_files(task: Task, models_dir=None, diffusers_dir=None, lora=None, lora_domain="realworld",
                     use_lora: bool = True) -> ModelFiles:
    """Locate the transformer, VAE, text encoder and LoRA; raise MissingModelFiles listing all that are absent.

    lora: an explicit LoRA path, or None to look for the released one for the task in ``models/loras``.
    diffusers_dir: a Diffusers Wan2.2-TI2V-5B folder (transformer/, vae/, text_encoder/, tokenizer/).
    """
    models_dir = Path(models_dir).expanduser() if models_dir else (None if diffusers_dir else default_models_dir())
    missing: list[tuple[Wanted, Path]] = []
    found: dict[str, Path | None] = {}
    for wanted in (TRANSFORMER, VAE, TEXT_ENCODER):
        if diffusers_dir:
            path = Path(diffusers_dir).expanduser() / wanted.role
            if not (path / "config.json").is_file():
                missing.append((wanted, path.parent))
            found[wanted.role] = path
            continue
        path = find_in_models_dir(models_dir, wanted) if models_dir else None
        if path is None:
            root = _models_root(models_dir) if models_dir else Path("ComfyUI/models")
            missing.append((wanted, root / wanted.folders[0]))
        found[wanted.role] = path
    lora_path = None
    if use_lora:
        wanted = lora_wanted(task, lora_domain)
        if lora:
            lora_path = Path(lora).expanduser()
            if not lora_path.is_file():
                missing.append((Wanted("lora", (str(lora_path.parent),), (lora_path.name,), wanted.url), lora_path.parent))
        else:
            lora_path = find_in_models_dir(models_dir, wanted) if models_dir else None
            if lora_path is None:
                root = _models_root(models_dir) if models_dir else Path("ComfyUI/models")
                missing.append((wanted, root / "loras"))
    if missing:
        error = MissingModelFiles(missing)
        if models_dir is not None and not models_dir.is_dir():
            error.args = (f"{error.args[0]}\n(The models folder {models_dir} does not exist.)",)
        raise error
    return ModelFiles(found["transformer"], found["vae"], found["text_encoder"], lora_path)
