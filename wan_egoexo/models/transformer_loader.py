"""Loading the Wan2.2-TI2V-5B transformer as a diffusers ``WanTransformer3DModel``.

Sources: the single file ComfyUI users have (original Wan key names, optionally prefixed
``model.diffusion_model.``; fp16/bf16/fp32, plain fp8, or ComfyUI's fp8-scaled layout, dequantised
on loading by ``fp8_scaled``) and Diffusers folders (the pipeline root or its ``transformer/``).
For single files the architecture is read from tensor shapes in the header, and the key set
is checked against the model that config builds, all before a single weight is read; key
renaming is diffusers' own ``convert_wan_transformer_to_diffusers``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from .checkpoint_files import (
    TensorInfo,
    find_diffusers_component,
    load_from_files,
    read_folder_headers,
    read_safetensors_header,
    strip_prefix,
)
from ..devices import resolve_device, resolve_dtype
from ..errors import InputError, ModelFileError
from ..memory.attention_choice import ATTENTION_BACKENDS
from .fp8_scaled import FP8_MARKER, check_scales, dequantize, is_layout_key, is_scale_key, weight_scales
from .weight_source import record_weight_source

EXPECTED = "the Wan2.2-TI2V-5B transformer (e.g. diffusion_models/wan2.2_ti2v_5B_fp16.safetensors)"
LATENT_CHANNELS = 48  # Wan2.2 VAE latents; Wan2.1 and Wan2.2-14B use 16
HEAD_DIM = 128  # every released Wan transformer uses 128-dim heads; not recoverable from shapes
MAX_LAYERS = 128  # the 5B has 30 blocks, the 14B 40; more means a hostile or foreign file
# Ceilings for a Diffusers config.json's integers: the model is built (on "meta", but its rotary
# tables are real) before the weights are checked, so a hostile config must not size it.
_CONFIG_CEILINGS = {"num_layers": MAX_LAYERS, "num_attention_heads": 256, "attention_head_dim": 512,
                    "in_channels": 1024, "out_channels": 1024, "text_dim": 1 << 15, "freq_dim": 1 << 13,
                    "ffn_dim": 1 << 17, "rope_max_seq_len": 1 << 16, "image_dim": 1 << 15, "pos_embed_seq_len": 1 << 16}


def infer_transformer_config(path, shapes: dict[str, tuple[int, ...]]) -> dict:
    """WanTransformer3DModel kwargs from the original-layout tensor shapes; raises for other models."""

    def need(key, ndim=2):
        if key not in shapes:
            raise ModelFileError(path, f"has no tensor {key!r}, so it is not a Wan transformer.", EXPECTED)
        if len(shapes[key]) != ndim or not all(shapes[key]):
            raise ModelFileError(path, f"has tensor {key!r} of shape {tuple(shapes[key])}.",
                                 f"a {ndim}-D tensor with no empty dimension ({EXPECTED})")
        return shapes[key]

    if any(k.startswith(("vace_", "motion_encoder", "face_adapter")) for k in shapes):
        raise ModelFileError(path, "is a Wan VACE/Animate transformer.", EXPECTED)
    if any(k.startswith("img_emb.") for k in shapes):
        raise ModelFileError(path, "is a Wan image-to-video transformer with a CLIP image branch (Wan2.1 I2V).",
                             EXPECTED)
    patch = need("patch_embedding.weight", 5)
    inner, in_channels = patch[0], patch[1]
    if in_channels != LATENT_CHANNELS:
        raise ModelFileError(
            path,
            f"takes {in_channels}-channel latents: it is a Wan2.1 or Wan2.2-14B transformer "
            f"(16-channel VAE), not the 5B model WorldWander was trained on.",
            f"{EXPECTED}, which takes {LATENT_CHANNELS}-channel Wan2.2 VAE latents",
        )
    patch_size = tuple(patch[2:])
    head = need("head.head.weight")
    out_channels = head[0] // (patch_size[0] * patch_size[1] * patch_size[2])
    num_layers = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    if not 0 < num_layers <= MAX_LAYERS or inner % HEAD_DIM:
        raise ModelFileError(path, f"has {num_layers} blocks of width {inner}.",
                             f"{EXPECTED}: 1 to {MAX_LAYERS} blocks of a width that is a multiple of {HEAD_DIM}")
    return dict(
        patch_size=patch_size,
        num_attention_heads=inner // HEAD_DIM,
        attention_head_dim=HEAD_DIM,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=need("text_embedding.0.weight")[1],
        freq_dim=need("time_embedding.0.weight")[1],
        ffn_dim=need("blocks.0.ffn.0.weight")[0],
        num_layers=num_layers,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        eps=1e-6,
        rope_max_seq_len=1024,
    )


_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def _check_tensors(path, model_shapes: dict[str, tuple[int, ...]], infos: dict[str, TensorInfo],
                   file_names: dict[str, str]) -> None:
    """Every weight's shape against the model its config builds, and its dtype, before any is read
    (diffusers' load_state_dict would otherwise fail mid-way with a traceback naming no file)."""
    wrong = [f"{file_names[k]} {infos[file_names[k]].shape} (the model needs {shape})"
             for k, shape in sorted(model_shapes.items()) if tuple(infos[file_names[k]].shape) != tuple(shape)]
    if wrong:
        raise ModelFileError(path, f"has {len(wrong)} tensors of the wrong shape for the transformer its other tensors "
                             f"describe: {'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''}.",
                             f"{EXPECTED}, complete and unmodified")
    odd = sorted(f"{name} ({infos[name].dtype})" for name in file_names.values() if infos[name].dtype not in _FLOAT_DTYPES)
    if odd:
        raise ModelFileError(path, f"holds {len(odd)} weights that are not floating point: {', '.join(odd[:3])}.",
                             f"weights in one of {', '.join(_FLOAT_DTYPES)}")


def _model_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    with init_empty_weights():
        return {k: tuple(v.shape) for k, v in WanTransformer3DModel(**config).state_dict().items()}


def _keep_in_fp32(name: str) -> bool:
    parts = set(name.split("."))
    return any(module in parts for module in WanTransformer3DModel._keep_in_fp32_modules)


def _build(config: dict, state_dict: dict[str, torch.Tensor], device, dtype,
           scales: dict[str, torch.Tensor] | None = None) -> WanTransformer3DModel:
    """The model on ``device``; a weight with a per-tensor scale (fp8-scaled files) is dequantised."""
    with init_empty_weights():  # parameters on "meta": nothing is allocated twice
        model = WanTransformer3DModel(**config)
    scales = scales or {}
    cast = {}
    for k, v in state_dict.items():
        target = torch.float32 if _keep_in_fp32(k) else dtype
        cast[k] = v.to(device=device, dtype=target) if k not in scales else dequantize(v.to(device), scales[k], target)
    model.load_state_dict(cast, strict=True, assign=True)
    model.rope.to(device)
    return model.eval().requires_grad_(False)


def _load_single_file(path: Path, device, dtype) -> WanTransformer3DModel:
    header = read_safetensors_header(path, EXPECTED)
    # the fp8-scaled marker sits under the model's prefix (where ComfyUI looks for it); one at the top is tolerated
    prefix, names = strip_prefix([k for k in header if k != FP8_MARKER],
                                 ("model.diffusion_model.", "diffusion_model.", "model."))
    weights = {name: full for name, full in names.items() if not is_layout_key(name) and not is_scale_key(name)}
    scales = weight_scales(names)  # "<layer>.weight" -> "<layer>.scale_weight", both without the prefix
    check_scales(path, {name: header[full] for name, full in names.items()}, scales, weights)
    shapes = {name: header[full].shape for name, full in weights.items()}
    config = infer_transformer_config(path, shapes)
    renamed = convert_wan_transformer_to_diffusers(dict(weights))  # diffusers name -> name in the file
    stripped = {full: name for name, full in weights.items()}
    scale_keys = {k: names[scales[stripped[v]]] for k, v in renamed.items() if stripped[v] in scales}
    model_shapes = _model_shapes(config)
    expected = set(model_shapes)
    missing, unexpected = expected - set(renamed), set(renamed) - expected
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} tensors (e.g. {sorted(missing)[:3]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unknown tensors (e.g. {sorted(renamed[k] for k in unexpected)[:3]})")
        raise ModelFileError(path, "does not match the Wan transformer layout: " + "; ".join(detail) + ".", EXPECTED)
    _check_tensors(path, model_shapes, header, renamed)
    tensors = load_from_files({k: path for k in header}, list(renamed.values()) + list(scale_keys.values()))
    model = _build(config, {k: tensors[v] for k, v in renamed.items()}, device, dtype,
                   {k: tensors[v] for k, v in scale_keys.items()})
    record_weight_source(model, {k: (path, v) for k, v in renamed.items()}, scale_keys)
    return model


def _load_diffusers_folder(folder: Path, device, dtype) -> WanTransformer3DModel:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(folder / "config.json", f"cannot be read ({exc}).") from None
    if not isinstance(config, dict):
        raise ModelFileError(folder / "config.json", "is not a JSON object.", "a WanTransformer3DModel config.json")
    if config.get("_class_name") not in (None, "WanTransformer3DModel"):
        raise ModelFileError(folder, f"holds a {config.get('_class_name')}, not a WanTransformer3DModel.", EXPECTED)
    if config.get("in_channels") != LATENT_CHANNELS or config.get("image_dim"):
        raise ModelFileError(folder, f"is a Wan transformer for {config.get('in_channels')}-channel latents"
                             f"{' with an image branch' if config.get('image_dim') else ''}.", EXPECTED)
    infos, where = read_folder_headers(folder)
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    for key, ceiling in _CONFIG_CEILINGS.items():
        value = kwargs.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= ceiling):
            raise ModelFileError(folder / "config.json", f"sets {key} to {str(value)[:40]}.",
                                 f"an integer from 0 to {ceiling} ({EXPECTED})")
    try:
        model_shapes = _model_shapes(kwargs)
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise ModelFileError(folder / "config.json", f"does not describe a WanTransformer3DModel ({exc}).",
                             EXPECTED) from None
    expected = set(model_shapes)
    if expected != set(infos):
        raise ModelFileError(folder, f"weights do not match its config.json ({len(expected - set(infos))} missing, "
                             f"{len(set(infos) - expected)} unknown).", EXPECTED)
    _check_tensors(folder, model_shapes, infos, {k: k for k in expected})
    model = _build(kwargs, load_from_files(where, sorted(expected)), device, dtype)
    record_weight_source(model, {k: (where[k], k) for k in expected})
    return model


def load_transformer(path, device=None, dtype=None, attention: str | None = None) -> WanTransformer3DModel:
    """Load the Wan2.2-TI2V-5B transformer from a single file or a Diffusers folder.

    device: "cpu", "cuda", ... or None for the first GPU when there is one.
    dtype: "bf16", "fp16", "fp32" or a torch dtype; None = bf16 on GPU, fp32 on CPU.
    attention: None/"sdpa" (PyTorch scaled-dot-product attention) or a diffusers attention backend name.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    path = Path(os.fspath(path)).expanduser()
    folder = find_diffusers_component(path, "transformer")
    if folder is not None:
        model = _load_diffusers_folder(folder, device, dtype)
    elif path.is_dir():
        raise ModelFileError(path, "is a folder without a config.json or transformer/ subfolder.",
                             f"{EXPECTED}, or a Diffusers folder")
    else:
        model = _load_single_file(path, device, dtype)
    set_attention_backend(model, attention)
    return model


def set_attention_backend(model: WanTransformer3DModel, attention: str | None) -> None:
    """Select the attention kernel; "sdpa"/None keeps PyTorch's scaled-dot-product attention."""
    if attention in (None, "", "sdpa", "auto"):
        return
    if attention not in ATTENTION_BACKENDS:
        raise InputError(f"attention: {attention!r} is not supported; expected one of {ATTENTION_BACKENDS}.")
    try:
        model.set_attention_backend(attention)
    except Exception as exc:  # diffusers raises several types when a kernel package is missing
        raise InputError(f"attention: backend {attention!r} is not available here ({exc}).") from None
