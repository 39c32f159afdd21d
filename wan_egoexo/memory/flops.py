"""FLOP count of one predict_flow step (one transformer forward over the in-context sequence),
following the cost model in the spec's last section: 2 FLOPs per multiply-add in every linear
layer, and 4 N^2 d per block for self-attention (Q K^T and the weighted sum of V).

At 704x1280x49 exo->ego (22,880 tokens) the 5B gives about 0.2 PFLOP in the linear layers and
0.19 PFLOP in self-attention per batch element, as the spec states. The tests check the formula
against torch.utils.flop_counter.FlopCounterMode on a real forward (exact).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InputError

# The Wan2.2-TI2V-5B transformer (spec, "Base model"); WanTransformer3DModel keyword arguments.
WAN22_5B_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
TEXT_TOKENS = 512


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one forward; ``total`` is the sum of the four parts."""

    tokens: int  # per batch element
    batch: int
    linear: float  # every linear layer and the patch embedding (blocks, embedders, head)
    self_attention: float  # softmax(Q K^T) V over all tokens, every block
    cross_attention: float  # the same against the text tokens
    timestep_embedding: float  # the per-token (or per-run, compact) timestep MLP and projection

    @property
    def total(self) -> float:
        return self.linear + self.self_attention + self.cross_attention + self.timestep_embedding

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def config_value(config, key):
    value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    if value is None:
        raise InputError(f"config: has no {key!r}; expected a WanTransformer3DModel config.")
    return value


def in_context_tokens(config, latent_frames: int, latent_height: int, latent_width: int,
                      has_reference: bool) -> int:
    """Tokens of one sample: (reference +) source + target latent frames, after the patch."""
    patch = tuple(config_value(config, "patch_size"))
    if latent_frames % patch[0] or latent_height % patch[1] or latent_width % patch[2]:
        raise InputError(f"latent grid {latent_frames}x{latent_height}x{latent_width} is not a multiple of the "
                         f"patch {patch}.")
    frames = 2 * latent_frames + (1 if has_reference else 0)
    return frames // patch[0] * (latent_height // patch[1]) * (latent_width // patch[2])


def predict_flow_flops(config, latent_frames: int, latent_height: int, latent_width: int,
                       has_reference: bool = False, batch: int = 1, text_tokens: int = TEXT_TOKENS,
                       timestep_rows: int | None = None) -> StepFlops:
    """FLOPs of one predict_flow call on ``batch`` samples of the given latent grid (per part).

    config: a WanTransformer3DModel config (or dict such as WAN22_5B_CONFIG).
    timestep_rows: timestep embeddings computed per sample; None = one per token (diffusers'
    default), 2 with compact modulation (one per run of equal timesteps: the clean reference and
    source tokens form one run at 0, the target another at t).
    """
    if batch < 1 or text_tokens < 1:
        raise InputError(f"batch and text_tokens must be >= 1, got {batch} and {text_tokens}.")
    tokens = in_context_tokens(config, latent_frames, latent_height, latent_width, has_reference)
    dim = config_value(config, "num_attention_heads") * config_value(config, "attention_head_dim")
    ffn, layers = config_value(config, "ffn_dim"), config_value(config, "num_layers")
    text_dim, freq_dim = config_value(config, "text_dim"), config_value(config, "freq_dim")
    patch_volume = math.prod(config_value(config, "patch_size"))
    rows = tokens if timestep_rows is None else timestep_rows

    per_block_linear = (
        4 * tokens * dim * dim  # self-attention q, k, v, out
        + 2 * tokens * dim * dim  # cross-attention q, out
        + 2 * text_tokens * dim * dim  # cross-attention k, v on the text
        + 2 * tokens * dim * ffn  # feed-forward up and down
    )
    outside_linear = (
        tokens * config_value(config, "in_channels") * patch_volume * dim  # patch embedding (a strided conv)
        + tokens * dim * config_value(config, "out_channels") * patch_volume  # head
        + text_tokens * (text_dim * dim + dim * dim)  # text embedder
    )
    linear = 2 * batch * (layers * per_block_linear + outside_linear)
    self_attention = batch * layers * 4 * tokens * tokens * dim
    cross_attention = batch * layers * 4 * tokens * text_tokens * dim
    timestep_embedding = 2 * batch * rows * (freq_dim * dim + dim * dim + dim * 6 * dim)
    return StepFlops(tokens, batch, float(linear), float(self_attention), float(cross_attention),
                     float(timestep_embedding))
