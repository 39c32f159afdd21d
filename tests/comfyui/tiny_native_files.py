"""Tiny models that ComfyUI's own loaders accept, for the native workflows and the text comparison.

ComfyUI builds Wan2.2-5B's WanModel with a text width of 4096 whatever the file says, and recognises
a UMT5 file as UMT5-XXL only by a 24th block of width 4096. So beside the pack's tiny models (text
width 32) the server's models folder gets a tiny transformer with text width 4096 and a UMT5 of 24
blocks of width 4096 (4 heads of 8, a feed-forward of 32, 300 words: 23 M parameters), under names
of their own; the native workflows are pointed at them (test_e2e_workflows.prepared_workflow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

NATIVE_TRANSFORMER = "tiny_text4096_wan2.2_ti2v_5B.safetensors"
NATIVE_TEXT_ENCODER = "tiny_umt5_d4096_fp8_scaled.safetensors"
DETECTABLE_UMT5 = dict(d_model=4096, num_layers=24, num_heads=4, d_kv=8, d_ff=32)


def write_detectable_umt5(path, other_dtype=torch.float16) -> dict:
    """A random UMT5 ComfyUI detects as UMT5-XXL, in the released file's layout (fp8 linear weights with
    per-tensor scales, the rest in ``other_dtype``, the tokenizer inside); returns its config."""
    from transformers import UMT5Config, UMT5EncoderModel  # noqa: PLC0415

    from wan_egoexo.tiny.text_encoder import TINY_UMT5_CONFIG, save_umt5_fp8_scaled, train_tiny_spiece  # noqa: PLC0415

    config = dict(TINY_UMT5_CONFIG, **DETECTABLE_UMT5)
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(**config)).eval()
    # T5's own initialisation for the linears and embeddings keeps 24 blocks well conditioned (float32 is
    # within 1.5e-6 of float64, so 1e-5 separates a real difference from rounding); the layer norms and
    # relative-position biases, which it sets to 1 and near 0, are made clearly non-trivial.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
            elif "relative_attention_bias" in name:
                param.normal_(0.0, 1.0)
    with tempfile.TemporaryDirectory() as work:
        spiece = train_tiny_spiece(work)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_umt5_fp8_scaled(model, spiece, path, other_dtype=other_dtype)
    return config


def add_native_models(models_dir: Path) -> None:
    """The transformer and UMT5 above, beside the tiny models folder's own files (same LoRAs: their
    shapes do not depend on the text width)."""
    from wan_egoexo.tiny.transformer import build_tiny_transformer, save_transformer_single_file  # noqa: PLC0415

    transformer = build_tiny_transformer(0, text_dim=4096)
    save_transformer_single_file(transformer, Path(models_dir) / "diffusion_models" / NATIVE_TRANSFORMER,
                                 prefix="model.diffusion_model.", dtype=torch.float16)
    write_detectable_umt5(Path(models_dir) / "text_encoders" / NATIVE_TEXT_ENCODER)
