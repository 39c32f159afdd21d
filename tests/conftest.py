"""Shared fixtures: tiny random Wan2.2-architecture models (real module types, tiny widths)."""

import pytest
import torch
from diffusers import WanTransformer3DModel

# Real Wan2.2-TI2V-5B structure (48 latent channels, patch (1,2,2), 128-dim heads so the rotary
# split is the real 44/42/42) at a width a CPU runs in milliseconds.
TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=32,
    freq_dim=256,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)


def make_tiny_transformer(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    # diffusers zero-initialises nothing here, but make every parameter clearly non-trivial so that
    # a wrongly mapped key cannot hide behind an all-zero or all-one tensor.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


@pytest.fixture
def tiny_transformer():
    return make_tiny_transformer()
