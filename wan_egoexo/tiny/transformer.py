"""A tiny random Wan2.2-TI2V transformer, and writing any diffusers Wan transformer back to the
original Wan single-file layout (the layout of wan2.2_ti2v_5B_fp16.safetensors), plain or
fp8-scaled (ComfyUI's ``*_fp8_scaled.safetensors``)."""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from .fp8_scaled import fp8_scaled_tensors

# The real 5B structure (48 latent channels, patch (1,2,2), 128-dim heads, so the rotary split is
# the real 44/42/42) at widths a CPU runs in milliseconds. text_dim matches tiny/text_encoder.py.
TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=32, freq_dim=256, ffn_dim=64, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)

# diffusers name piece -> original Wan name piece, applied in this order (the inverse of
# diffusers' convert_wan_transformer_to_diffusers for the T2V/TI2V keys).
_TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def original_key(name: str) -> str:
    """The original Wan key for a diffusers WanTransformer3DModel state-dict key."""
    for new, old in _TO_ORIGINAL:
        name = name.replace(new, old)
    if name == "scale_shift_table":
        return "head.modulation"
    if name.endswith(".scale_shift_table"):
        return name[: -len("scale_shift_table")] + "modulation"
    # diffusers' norm2 is the cross-attention norm, the original's norm3 (and the reverse)
    if ".norm2." in name:
        return name.replace(".norm2.", ".norm3.")
    if ".norm3." in name:
        return name.replace(".norm3.", ".norm2.")
    return name


def save_transformer_single_file(model: WanTransformer3DModel, path, prefix: str = "",
                                 dtype: torch.dtype | None = None) -> None:
    """Write ``model`` with original Wan key names (optionally prefixed, e.g. "model.diffusion_model.")."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        tensors[prefix + original_key(name)] = (tensor.to(dtype) if dtype else tensor).contiguous()
    save_file(tensors, str(path))


def save_transformer_fp8_scaled(model: WanTransformer3DModel, path, prefix: str = "",
                                other_dtype: torch.dtype = torch.float16, with_scale_input: bool = False) -> None:
    """Write ``model`` with original Wan key names in the fp8-scaled layout: every linear weight as
    float8_e4m3fn with a per-tensor ``scale_weight``, the other tensors in ``other_dtype``."""
    linear = {original_key(f"{name}.weight") for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear)}
    state = {original_key(name): tensor for name, tensor in model.state_dict().items()}
    save_file(fp8_scaled_tensors(state, linear, other_dtype, with_scale_input, prefix), str(path))


def build_tiny_transformer(seed: int = 0, **config) -> WanTransformer3DModel:
    """Random weights, every parameter clearly non-trivial so a mis-mapped key cannot hide. ``config``
    overrides TINY_TRANSFORMER_CONFIG: ComfyUI's own WanModel fixes text_dim at 4096 (its loader
    does not read it from the file), so a tiny model for ComfyUI's UNETLoader needs text_dim=4096."""
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, **config}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model
