"""Loading the Wan2.2 VAE into diffusers' ``AutoencoderKLWan``, from ComfyUI's single file
(original key layout) or from a Diffusers folder.

The architecture is read from the tensor shapes in the file header, never assumed, and the file is
checked completely (kind, names, shapes) before any weight is read. The model is built on the meta
device and the weights are assigned into it, so the file is held in memory once.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from .checkpoint_files import (find_diffusers_component, load_from_files, read_folder_headers,
                               read_safetensors_header, strip_prefix)
from ..devices import resolve_device, resolve_dtype
from ..errors import ModelFileError
from .vae_keys import ORIGINAL_LAYOUT, diffusers_to_original, identify_vae_layout, original_to_diffusers

# Per-channel statistics of the released Wan2.2 VAE latents (Wan-AI/Wan2.2-TI2V-5B-Diffusers
# vae/config.json; ComfyUI comfy/latent_formats.py class Wan22). The single file does not carry them.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]

# Some tools save the VAE with the prefix it has inside a full checkpoint.
_VAE_PREFIXES = ("first_stage_model.", "vae.")
_EXPECTED_FILE = "the Wan2.2 VAE (wan2.2_vae.safetensors)"
_MAX_LEVELS = 8  # bounds the (meta) model a file's header can make us build before its weights are checked


def infer_vae_config(path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """AutoencoderKLWan architecture arguments read from the shapes of diffusers-named weights.

    ``latents_mean`` / ``latents_std`` are not architecture and are left out; raises ModelFileError
    naming ``path`` when a weight the architecture needs is absent or has an impossible shape.
    """
    def shape_of(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ModelFileError(path, f"lacks the tensor {key!r} (as named in diffusers' layout).", _EXPECTED_FILE)
        if len(shapes[key]) < 2 or not all(shapes[key]):
            raise ModelFileError(path, f"has tensor {key!r} of shape {tuple(shapes[key])}.",
                                 f"a convolution weight with no empty dimension ({_EXPECTED_FILE})")
        return shapes[key]

    base_dim, in_channels = shape_of("encoder.conv_in.weight")[:2]
    z_dim = shape_of("quant_conv.weight")[0] // 2
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
    if not levels or levels != list(range(len(levels))) or len(levels) > _MAX_LEVELS:
        raise ModelFileError(path, f"has encoder levels {levels[:10]}; expected consecutive levels from 0, at most "
                             f"{_MAX_LEVELS} (Wan2.2 has 4).", _EXPECTED_FILE)
    dim_mult = []
    for level in levels:
        width = shape_of(f"encoder.down_blocks.{level}.resnets.0.conv1.weight")[0]
        if width % base_dim:
            raise ModelFileError(path, f"has encoder level {level} of width {width}, not a multiple of the base "
                                 f"width {base_dim}.", _EXPECTED_FILE)
        dim_mult.append(width // base_dim)
    num_res_blocks = 1 + max(int(m.group(1)) for k in shapes
                             if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k)))  # level 0's resnets.0 was found above
    if num_res_blocks > _MAX_LEVELS:
        raise ModelFileError(path, f"has {num_res_blocks} residual blocks per level; at most {_MAX_LEVELS} are read "
                             "(Wan2.2 has 2).", _EXPECTED_FILE)
    temperal_downsample = [f"encoder.down_blocks.{level}.downsampler.time_conv.weight" in shapes
                           for level in levels[:-1]]
    out_channels, last_width = shape_of("decoder.conv_out.weight")[:2]
    decoder_base_dim = last_width // dim_mult[0]
    patch = math.isqrt(in_channels // 3)
    if in_channels != 3 * patch * patch or out_channels != in_channels:
        raise ModelFileError(path, f"takes {in_channels} input and gives {out_channels} output channels; expected "
                             "3 x p x p for a p x p patchified RGB video (12 for Wan2.2).", _EXPECTED_FILE)
    return dict(
        base_dim=base_dim,
        decoder_base_dim=decoder_base_dim,
        z_dim=z_dim,
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        attn_scales=[],
        temperal_downsample=temperal_downsample,
        dropout=0.0,
        is_residual=True,
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=patch if patch > 1 else None,
        scale_factor_temporal=2 ** sum(temperal_downsample),
        scale_factor_spatial=patch * 2 ** (len(levels) - 1),
    )


def _latent_stats_from_folder(folder: Path, z_dim: int) -> tuple[list[float], list[float]]:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(config_path, f"cannot be read as JSON ({exc}).", "the VAE's Diffusers config.json") from None
    class_name = config.get("_class_name", "AutoencoderKLWan")
    if class_name != "AutoencoderKLWan":
        raise ModelFileError(config_path, f"describes a {class_name}, not a VAE of Wan.",
                             "the config.json of a Wan2.2 AutoencoderKLWan ('vae' folder)")
    return _checked_stats(config_path, config.get("latents_mean"), config.get("latents_std"), z_dim)


def _checked_stats(path, mean, std, z_dim: int):
    for name, values in (("latents_mean", mean), ("latents_std", std)):
        if not isinstance(values, list) or len(values) != z_dim:
            count = len(values) if isinstance(values, list) else "no"
            raise ModelFileError(path, f"gives {count} {name} values for a VAE with {z_dim} latent channels.",
                                 f"{z_dim} per-channel values (48 for the Wan2.2 VAE)")
    if any(value <= 0 for value in std):
        raise ModelFileError(path, "has a latents_std value <= 0.", "positive per-channel standard deviations")
    return list(mean), list(std)


def _check_against_model(path, config: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compare the file's names and shapes with the model the config describes (built on meta)."""
    with torch.device("meta"):
        reference = AutoencoderKLWan(**config)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: {shapes[k]} (model {expected[k]})" for k in sorted(set(expected) & set(shapes))
             if tuple(shapes[k]) != expected[k]]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            problems.append(f"{len(items)} {label} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
    if problems:
        raise ModelFileError(path, "does not match the Wan2.2 VAE architecture its own shapes describe: "
                             + "; ".join(problems) + ".", "a complete, unmodified Wan2.2 VAE file")


def read_vae_file(path) -> tuple[dict, dict[str, tuple[Path, str]]]:
    """Check a Wan2.2 VAE file or Diffusers folder without reading weights.

    Returns the full AutoencoderKLWan config and {diffusers name: (file, name in that file)}.
    """
    folder = find_diffusers_component(path, "vae") if Path(path).is_dir() else None
    if Path(path).is_dir() and folder is None:
        raise ModelFileError(path, "is a folder without config.json or vae/config.json.",
                             "wan2.2_vae.safetensors, a Diffusers 'vae' folder or the pipeline folder holding it")
    if folder is not None:
        infos, where = read_folder_headers(folder)
    else:
        infos = read_safetensors_header(path)
        where = {key: Path(path) for key in infos}
    prefix, stripped = strip_prefix(infos, _VAE_PREFIXES)
    stripped_infos = {short: infos[full] for short, full in stripped.items()}
    label = folder if folder is not None else path
    layout = identify_vae_layout(label, stripped_infos)

    if layout == ORIGINAL_LAYOUT:
        renamed, unknown = original_to_diffusers(stripped)
        if unknown:
            raise ModelFileError(label, f"has {len(unknown)} names outside the Wan2.2 VAE layout "
                                 f"({', '.join(sorted(unknown)[:4])}).", _EXPECTED_FILE)
    else:
        renamed = {short: short for short in stripped}
    shapes = {new: stripped_infos[old].shape for old, new in renamed.items()}
    if len(shapes) != len(renamed):
        raise ModelFileError(label, "has two names that map to the same diffusers weight.", _EXPECTED_FILE)
    config = infer_vae_config(label, shapes)

    if layout == ORIGINAL_LAYOUT:
        # Every original name must be the one the inverse mapping gives back, so that a resampling
        # layer at the wrong position in its block is not silently accepted.
        back, _ = diffusers_to_original(shapes, config["num_res_blocks"])
        misplaced = sorted(old for old, new in renamed.items() if back.get(new) != old)
        if misplaced:
            raise ModelFileError(label, f"has layers at unexpected positions ({', '.join(misplaced[:4])}).", _EXPECTED_FILE)
    if folder is not None:
        mean, std = _latent_stats_from_folder(folder, config["z_dim"])
    else:
        mean, std = _checked_stats(label, WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, config["z_dim"])
    config.update(latents_mean=mean, latents_std=std)
    _check_against_model(label, config, shapes)
    sources = {new: (where[stripped[old]], stripped[old]) for old, new in renamed.items()}
    return config, sources


def load_vae(path: str | os.PathLike, device=None, dtype=None) -> AutoencoderKLWan:
    """Load the Wan2.2 VAE (ComfyUI's wan2.2_vae.safetensors, or a Diffusers folder) in eval mode.

    ``dtype`` defaults to float32 on every device (the VAE is small next to the transformer and
    decodes more faithfully in fp32); pass one ("bf16", torch.float16, "auto", ...) to change it.
    Gradients are switched off for every weight.
    """
    device = resolve_device(device)
    dtype = torch.float32 if dtype is None else resolve_dtype(dtype, device)
    config, sources = read_vae_file(path)

    where = {file_key: file for file, file_key in sources.values()}
    tensors = load_from_files(where, list(where), device=str(device))
    state = {}
    for new, (_, file_key) in sources.items():
        state[new] = tensors.pop(file_key).to(device=device, dtype=dtype)

    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    vae.load_state_dict(state, strict=True, assign=True)
    still_empty = [name for name, tensor in list(vae.named_parameters()) + list(vae.named_buffers()) if tensor.is_meta]
    if still_empty:
        raise ModelFileError(path, f"left {len(still_empty)} weights unset ({', '.join(still_empty[:4])}).", _EXPECTED_FILE)
    return vae.eval().requires_grad_(False)
