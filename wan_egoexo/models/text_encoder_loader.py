"""Loading the UMT5 text encoder (Wan's UMT5-XXL) from a ComfyUI single file (fp8-scaled or plain
fp16/bf16/fp32) or a Diffusers ``text_encoder/`` folder, into a transformers ``UMT5EncoderModel``.

The architecture is inferred from tensor shapes in the safetensors header, so a tiny file in the
real layout takes exactly the real file's path. Every file is checked from its header before any
weight is read: other T5 families, CLIP, transformer, VAE and LoRA files are refused with a message
that says what they are. The model is built on the meta device and the weights are assigned into
it, one tensor at a time, so the 11 GB model is never allocated twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import UMT5Config, UMT5EncoderModel

from .checkpoint_files import (TensorInfo, find_diffusers_component, load_from_files, open_safetensors,
                               read_folder_headers, read_safetensors_header)
from ..devices import resolve_device, resolve_dtype
from ..errors import ModelFileError
from .fp8_scaled import check_scales, dequantize, is_layout_key, is_scale_key, weight_scales
from .umt5_tokenizer import (SPIECE_TENSOR, UMT5Tokenizer, is_tokenizer_folder, load_tokenizer,
                             read_spiece_model, tokenizer_from_folder, tokenizer_from_model_proto)

EXPECTED_FILE = ("a UMT5 text encoder: umt5_xxl_fp8_e4m3fn_scaled.safetensors / umt5_xxl_fp16.safetensors "
                 "(ComfyUI models/text_encoders) or a Diffusers text_encoder/ folder")
TIED_EMBEDDING = "encoder.embed_tokens.weight"  # UMT5EncoderModel ties it to shared.weight
_FIRST_Q = "encoder.block.0.layer.0.SelfAttention.q.weight"
MAX_LAYERS = 128  # bounds the (meta) model a header can make us build before its weights are checked
_BIAS = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
_SAFETENSORS_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass
class TextEncoder:
    model: UMT5EncoderModel  # eval mode, no gradients
    tokenizer: UMT5Tokenizer
    source: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)


def _inspect(path: Path, tokenizer_path=None):
    """Every check load_text_encoder makes before reading a weight: file kind, architecture, key
    set and tokenizer. Returns what loading needs next."""
    folder_config: dict = {}
    if path.is_dir():
        component = find_diffusers_component(path, "text_encoder")
        if component is None:
            raise ModelFileError(path, "is a folder without config.json or a text_encoder/ subfolder.", EXPECTED_FILE)
        header, where = read_folder_headers(component)
        folder_config = _read_config_json(component)
    else:
        component = None
        header = read_safetensors_header(path)
        where = {key: path for key in header}

    reject_non_umt5(path, header)
    config = infer_umt5_config(path, header, folder_config)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    plan = _plan_weights(path, header, model)
    tokenizer = _resolve_tokenizer(path, header, component, tokenizer_path, config.vocab_size)
    return model, plan, where, tokenizer


def check_text_encoder(path, tokenizer_path=None) -> None:
    """Raise the error load_text_encoder would raise for a wrong file, without reading any weight
    (hosts that load the encoder lazily, only on a prompt-cache miss, check the file up front)."""
    _inspect(Path(path), tokenizer_path)


def load_text_encoder(path, device=None, dtype=None, tokenizer_path=None) -> TextEncoder:
    """Load a UMT5 encoder and its tokenizer. ``path``: a single .safetensors file or a Diffusers
    pipeline / text_encoder folder. ``tokenizer_path`` overrides where the tokenizer comes from."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    path = Path(path)
    model, plan, where, tokenizer = _inspect(path, tokenizer_path)
    state = _load_weights(plan, where, dtype, device)
    state[TIED_EMBEDDING] = state["shared.weight"]
    model.load_state_dict(state, assign=True, strict=True)
    model.set_input_embeddings(model.shared)  # one Parameter for shared and encoder.embed_tokens
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        raise RuntimeError(f"{path}: some UMT5 weights were not loaded (still on the meta device).")
    model.eval().requires_grad_(False)
    return TextEncoder(model=model, tokenizer=tokenizer, source=str(path))


def reject_non_umt5(path, header: dict[str, TensorInfo]) -> None:
    """Raise ModelFileError saying what the file is when it is not a UMT5 encoder (header only)."""
    keys = list(header)
    if _FIRST_Q not in header:
        raise ModelFileError(path, f"{_describe_foreign_file(keys)}, not a UMT5 text encoder "
                             f"(it has no {_FIRST_Q!r}).", EXPECTED_FILE)
    if "encoder.block.0.layer.1.DenseReluDense.wi.weight" in header:
        raise ModelFileError(path, "is an original T5 (v1.0, single non-gated feed-forward 'wi'), not UMT5 "
                             "(UMT5 has gated 'wi_0'/'wi_1').", EXPECTED_FILE)
    if "encoder.block.1.layer.0.SelfAttention.q.weight" in header and _BIAS.format(1) not in header:
        vocab = header.get("shared.weight", header.get(TIED_EMBEDDING))
        vocab_note = f", vocabulary {vocab.shape[0]}" if vocab is not None and len(vocab.shape) == 2 else ""
        raise ModelFileError(path, "is a T5 v1.1 encoder (relative-attention bias only in block 0"
                             f"{vocab_note}; e.g. the Flux/SD3 t5xxl file), not UMT5 (bias in every block, "
                             "vocabulary 256384).", EXPECTED_FILE)


def _describe_foreign_file(keys: list[str]) -> str:
    def has(*fragments):
        return any(fragment in key for key in keys for fragment in fragments)

    if has("lora_A", "lora_B", "lora_down", "lora_up", "lora_unet_"):
        return "is a LoRA"
    if "token_embedding.weight" in keys and has("blocks.0.attn.q.weight"):
        return ("is UMT5 in the original Wan layout (umt5-xxl-enc-bf16), which this loader does not read; "
                "use ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors or umt5_xxl_fp16.safetensors")
    if has("text_model.encoder.layers.", "text_model.embeddings."):
        return "is a CLIP text encoder"
    if has("model.layers.0.self_attn."):
        return "is a decoder-only language model (Llama/Qwen/Gemma family)"
    if has("diffusion_model.", "patch_embedding", "self_attn.q.weight", "attn1.to_q", "condition_embedder"):
        return "is a diffusion transformer"
    if has("encoder.downsamples", "decoder.upsamples", "encoder.down_blocks", "decoder.up_blocks",
           "encoder.conv1", "encoder.conv_in", "post_quant_conv", "first_stage_model"):
        return "is a VAE"
    return "holds no T5 encoder weights"


def infer_umt5_config(path, header: dict[str, TensorInfo], folder_config: dict | None = None) -> UMT5Config:
    """The UMT5 architecture read from tensor shapes. Layer-norm epsilon and the relative-attention
    maximum distance leave no trace in shapes: they come from a Diffusers config.json when there is
    one, else the values every UMT5 uses (1e-6, 128)."""
    folder_config = folder_config or {}
    model_type = folder_config.get("model_type", "umt5")
    if model_type != "umt5":
        raise ModelFileError(path, f"has config.json model_type {model_type!r}.", "model_type 'umt5'")
    embedding = header.get("shared.weight", header.get(TIED_EMBEDDING))
    if embedding is None or len(embedding.shape) != 2:
        raise ModelFileError(path, "has no 2-D token embedding 'shared.weight'.", EXPECTED_FILE)
    vocab_size, d_model = embedding.shape
    bias = header.get(_BIAS.format(0))
    if bias is None or len(bias.shape) != 2:
        raise ModelFileError(path, f"has no 2-D relative-attention bias {_BIAS.format(0)!r}.", EXPECTED_FILE)
    num_buckets, num_heads = bias.shape
    if len(header[_FIRST_Q].shape) != 2:
        raise ModelFileError(path, f"has a {len(header[_FIRST_Q].shape)}-D {_FIRST_Q!r}.", "a 2-D attention weight")
    inner_dim = header[_FIRST_Q].shape[0]
    if num_heads == 0 or inner_dim % num_heads:
        raise ModelFileError(path, f"has attention width {inner_dim}, not a multiple of its {num_heads} heads.",
                             EXPECTED_FILE)
    ff = header.get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    if ff is None or len(ff.shape) != 2:
        raise ModelFileError(path, "has no gated feed-forward 'encoder.block.0.layer.1.DenseReluDense.wi_0.weight'.",
                             EXPECTED_FILE)
    blocks = {int(m.group(1)) for key in header if (m := re.match(r"encoder\.block\.(\d+)\.", key))}
    num_layers = max(blocks) + 1
    if num_layers > MAX_LAYERS:
        raise ModelFileError(path, f"names encoder block {num_layers - 1}.", f"at most {MAX_LAYERS} encoder blocks "
                             "(UMT5-XXL has 24)")
    if blocks != set(range(num_layers)):
        missing = sorted(set(range(num_layers)) - blocks)
        raise ModelFileError(path, f"is missing encoder blocks {missing[:8]} (incomplete or mixed file).",
                             f"encoder blocks 0..{num_layers - 1}")
    feed_forward = folder_config.get("feed_forward_proj", "gated-gelu")
    if feed_forward != "gated-gelu":
        raise ModelFileError(path, f"has config.json feed_forward_proj {feed_forward!r}.", "'gated-gelu' (UMT5)")
    max_distance, epsilon = folder_config.get("relative_attention_max_distance", 128), \
        folder_config.get("layer_norm_epsilon", 1e-6)
    if type(max_distance) is not int or not 0 < max_distance <= 1 << 20 \
            or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
        raise ModelFileError(path, f"has config.json relative_attention_max_distance {str(max_distance)[:20]} and "
                             f"layer_norm_epsilon {str(epsilon)[:20]}.", "a positive integer and a small positive number")
    return UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=inner_dim // num_heads, d_ff=ff.shape[0],
        num_layers=num_layers, num_decoder_layers=0, num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        layer_norm_epsilon=float(epsilon),
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )


@dataclass
class _TensorPlan:
    file_key: str
    scale_key: str | None  # per-tensor scale to multiply by (fp8-scaled files)


def _is_ignored(key: str) -> bool:
    return (key == SPIECE_TENSOR or is_layout_key(key)
            or key.startswith(("decoder.", "lm_head.")))  # a full encoder-decoder checkpoint


def _plan_weights(path, header: dict[str, TensorInfo], model: UMT5EncoderModel) -> dict[str, _TensorPlan]:
    """Match every header key to the (meta) model's parameters, checking names, shapes and dtypes."""
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items() if key != TIED_EMBEDDING}
    linear_weights = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    scales = weight_scales(header)
    file_keys = {key: key for key in header
                 if not _is_ignored(key) and not is_scale_key(key) and key != TIED_EMBEDDING}
    if "shared.weight" not in file_keys and TIED_EMBEDDING in header:
        file_keys["shared.weight"] = TIED_EMBEDDING

    missing = sorted(set(expected) - set(file_keys))
    unexpected = sorted(set(file_keys) - set(expected))
    if missing or unexpected:
        problem = "does not match the UMT5 layout its shapes imply:"
        if missing:
            problem += f" {len(missing)} missing tensors, e.g. {missing[:4]};"
        if unexpected:
            problem += f" {len(unexpected)} unknown tensors, e.g. {unexpected[:4]};"
        raise ModelFileError(path, problem.rstrip(";") + ".", EXPECTED_FILE)
    stray_scales = sorted(set(scales) - linear_weights)
    if stray_scales:
        raise ModelFileError(path, f"has scale_weight tensors for non-linear weights, e.g. {stray_scales[:4]}.",
                             "scale_weight only beside quantised linear weights")
    check_scales(path, header, scales, file_keys.values())

    plan = {}
    for key, file_key in file_keys.items():
        info = header[file_key]
        if info.shape != expected[key]:
            raise ModelFileError(path, f"tensor {file_key!r} has shape {info.shape}.",
                                 f"shape {expected[key]} (from the UMT5 layout its other tensors imply)")
        if info.dtype not in _SAFETENSORS_DTYPES:
            raise ModelFileError(path, f"tensor {file_key!r} has unsupported dtype {info.dtype}.",
                                 f"one of {sorted(_SAFETENSORS_DTYPES)}")
        plan[key] = _TensorPlan(file_key, scales.get(key))
    return plan


def _load_weights(plan: dict[str, _TensorPlan], where: dict[str, Path], dtype, device) -> dict[str, torch.Tensor]:
    """Read, dequantise (weight.float() * scale_weight) and cast each tensor, one at a time.

    The file is opened directly rather than through checkpoint_files.load_safetensors so that
    only one source tensor is alive at a time (the fp8 file plus the cast model would otherwise
    sit in memory together)."""
    scale_keys = [p.scale_key for p in plan.values() if p.scale_key is not None]
    scales = load_from_files(where, scale_keys)
    by_file: dict[Path, list[str]] = {}
    for key, item in plan.items():
        by_file.setdefault(where[item.file_key], []).append(key)
    state = {}
    for file, keys in by_file.items():
        with open_safetensors(file) as handle:
            for key in keys:
                item = plan[key]
                raw = handle.get_tensor(item.file_key).to(device)
                # fp8 without a scale: ComfyUI reads it with scale 1, a plain cast
                state[key] = dequantize(raw, scales.get(item.scale_key), dtype)
                del raw
    return state


def _read_config_json(component: Path) -> dict:
    config_path = component / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(config_path, f"could not be read as JSON ({exc}).", "a UMT5 config.json") from None
    if not isinstance(config, dict):
        raise ModelFileError(config_path, "is not a JSON object.", "a UMT5 config.json")
    return config


def _resolve_tokenizer(path, header, component: Path | None, tokenizer_path, model_vocab: int) -> UMT5Tokenizer:
    """tokenizer_path if given; else the single file's spiece_model tensor; else the Diffusers
    tokenizer/ folder beside text_encoder/."""
    tokenizer = None
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    elif component is None:
        proto = read_spiece_model(path, header)
        if proto is not None:
            tokenizer = tokenizer_from_model_proto(proto, f"{path} [{SPIECE_TENSOR}]")
    else:
        for candidate in (component.parent / "tokenizer", component):
            if is_tokenizer_folder(candidate):
                tokenizer = tokenizer_from_folder(candidate)
                break
    if tokenizer is None:
        where = "no tokenizer/ folder beside its text_encoder/" if component is not None else "no tokenizer_path was given"
        raise ModelFileError(path, f"has no {SPIECE_TENSOR!r} tensor and {where}, so there is no tokenizer.",
                             "the ComfyUI UMT5 file (it carries spiece_model), a Diffusers folder with tokenizer/, "
                             "or tokenizer_path pointing at a tokenizer folder or spiece.model")
    if tokenizer.vocab_size > model_vocab:
        raise ModelFileError(tokenizer.source, f"has {tokenizer.vocab_size} tokens but the text encoder {path} "
                             f"embeds only {model_vocab}.", "the UMT5 tokenizer that belongs to this encoder")
    return tokenizer

