"""The memory model: bytes of weights, activations and attention for one translation, per option.

Weights are counted exactly from the model definition (built on the meta device, nothing is
allocated). Activations follow what diffusers' WanTransformer3DModel keeps alive, phase by phase
(modulation, self-attention, feed-forward, residuals), with and without compact modulation; the
model was checked against measured CPU peaks at the real width (see docs/performance.md).
Attention itself is O(tokens) with PyTorch SDPA's flash / memory-efficient kernels and flash-attn:
only a float32 log-sum-exp per head and token. The VAE terms are per output pixel, measured on the
CPU with the real Wan2.2 VAE architecture (random weights, float32) and scaled by the dtype size.

All figures are estimates for planning (auto.py); real peaks add the CUDA context (~0.5 GB, not in
torch.cuda.max_memory_allocated) and allocator fragmentation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch

from .flops import TEXT_TOKENS, WAN22_5B_CONFIG, config_value

# The released Wan2.2 VAE (AutoencoderKLWan arguments, wan2.2_vae.safetensors: 705 M parameters).
WAN22_VAE_CONFIG = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0, is_residual=True, in_channels=12, out_channels=12,
    patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
)
# UMT5-XXL encoder (spec): 5.7 B parameters.
UMT5_XXL_CONFIG = dict(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24,
                       relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
# Peak float32 activation bytes per output pixel of one VAE call, measured with the real Wan2.2 VAE
# architecture on the CPU at 256x256, 5 frames (benchmarks/bench_vae.py, its JSON in
# benchmarks/results/cpu/vae_wan22_arch_256x256.json):
# decode 20,874 B/px, encode 7,290 B/px. Time is processed in causal chunks (one latent frame per
# decoder call), so these do not grow with the number of frames.
VAE_DECODE_BYTES_PER_PIXEL_FP32 = 21_000
VAE_ENCODE_BYTES_PER_PIXEL_FP32 = 7_300
VAE_TILE = 256  # diffusers' default tile and stride (pixels) for AutoencoderKLWan.enable_tiling
VAE_TILE_STRIDE = 192


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _keep_fp32(name: str, keep: list[str]) -> bool:
    return any(part in keep for part in name.split("."))


def _fp8_castable(name: str) -> bool:
    """Weights that fp8_weights.enable_fp8_storage stores in float8: the block linears."""
    return name.startswith("blocks.") and any(f".{kind}." in name for kind in ("attn1", "attn2", "ffn")) \
        and "norm" not in name


@dataclass(frozen=True)
class TransformerWeights:
    per_block: int  # bytes of one block
    blocks: int  # bytes of all blocks
    other: int  # patch embedding, embedders, head, tables
    parameters: int  # count

    @property
    def total(self) -> int:
        return self.blocks + self.other


def transformer_weight_bytes(config=None, dtype: torch.dtype = torch.bfloat16, fp8: bool = False) -> TransformerWeights:
    """Exact weight bytes of a WanTransformer3DModel as our loader stores it: the modules diffusers
    keeps in float32 in float32, the rest in ``dtype``, block linears in 1 byte when ``fp8``."""
    from diffusers import WanTransformer3DModel

    keep = list(WanTransformer3DModel._keep_in_fp32_modules)
    config = dict(config or WAN22_5B_CONFIG)
    size = _itemsize(dtype)
    blocks = other = count = first_block = 0
    for name, numel in _parameter_sizes(tuple(sorted((k, _hashable(v)) for k, v in config.items()))):
        count += numel
        nbytes = numel * (4 if _keep_fp32(name, keep) else 1 if fp8 and _fp8_castable(name) else size)
        if name.startswith("blocks."):
            blocks += nbytes
            first_block += nbytes if name.startswith("blocks.0.") else 0
        else:
            other += nbytes
    return TransformerWeights(first_block, blocks, other, count)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value



@functools.lru_cache(maxsize=8)
def _parameter_sizes(config_items: tuple) -> tuple[tuple[str, int], ...]:
    """(name, numel) of every parameter of the model, built on the meta device (cached: the 5B
    takes a few seconds to build even there)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        model = WanTransformer3DModel(**dict(config_items))
    return tuple((name, param.numel()) for name, param in model.named_parameters())


def lora_bytes(config=None, rank: int = 80, dtype: torch.dtype = torch.bfloat16) -> int:
    """Unfused LoRA adapters on the ten WorldWander linears of every block (PEFT keeps them in the
    base layer's dtype)."""
    config = config or WAN22_5B_CONFIG
    dim = config_value(config, "num_attention_heads") * config_value(config, "attention_head_dim")
    ffn = config_value(config, "ffn_dim")
    per_block = rank * (8 * (dim + dim) + 2 * (dim + ffn))
    return per_block * config_value(config, "num_layers") * _itemsize(dtype)


@functools.lru_cache(maxsize=4)
def text_encoder_bytes(dtype: torch.dtype = torch.bfloat16) -> int:
    """UMT5-XXL encoder weights in ``dtype`` (our loader dequantises the fp8 file)."""
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
    # encoder.embed_tokens is shared.weight once loaded (tied); on meta they are separate objects.
    count = sum(p.numel() for name, p in model.named_parameters() if name != "encoder.embed_tokens.weight")
    return count * _itemsize(dtype)


@functools.lru_cache(maxsize=4)
def vae_weight_bytes(dtype: torch.dtype = torch.bfloat16) -> int:
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        vae = AutoencoderKLWan(**WAN22_VAE_CONFIG)
    return sum(p.numel() for p in vae.parameters()) * _itemsize(dtype)


@dataclass(frozen=True)
class ActivationBytes:
    persistent: int  # kept through the whole forward (a block's input, timestep tensors, text, rotary tables)
    block_peak: int  # the largest transient inside one block
    head_peak: int  # output norm and projection
    attention: int  # the attention kernel's own state (log-sum-exp), included in block_peak

    @property
    def peak(self) -> int:
        return self.persistent + max(self.block_peak, self.head_peak)


def predict_flow_activation_bytes(config, tokens: int, batch: int, dtype: torch.dtype = torch.bfloat16,
                                  compact_modulation: bool = False, text_tokens: int = TEXT_TOKENS) -> ActivationBytes:
    """Peak activation bytes of one predict_flow forward (inference, no gradients) on ``batch``
    sequences of ``tokens`` tokens, following what each step of the forward keeps alive.

    ``E`` is batch x tokens x width elements, ``G`` the same at the feed-forward width, ``s`` the
    model dtype's size and ``c`` that of a float32 copy of a model-dtype tensor (0 in float32, where
    ``.float()`` copies nothing). While a block runs, the transformer's loop still holds the block's
    input, so a block's own running hidden state comes on top of it.
    """
    dim = config_value(config, "num_attention_heads") * config_value(config, "attention_head_dim")
    heads = config_value(config, "num_attention_heads")
    head_dim = config_value(config, "attention_head_dim")
    text_dim = config_value(config, "text_dim")
    s = _itemsize(dtype)
    c = 0 if s == 4 else 4
    E = batch * tokens * dim
    G = batch * tokens * config_value(config, "ffn_dim")
    T = batch * text_tokens * dim  # text keys / values
    attention = batch * heads * tokens * 4  # float32 log-sum-exp
    # the text input cast to the model dtype (the sampler's float32 embeddings), the embedded text, the
    # rotary tables, the concatenated latents
    fixed = batch * text_tokens * (c // 4 * s * text_dim + s * dim) + 2 * tokens * head_dim * 4 \
        + batch * tokens * config_value(config, "in_channels") * math.prod(config_value(config, "patch_size")) * s
    # RMS norm of q or k: a float32 copy, its square and the float32 product (measured on the CPU, where the
    # mixed-dtype product also makes a float32 copy of its input; CUDA does not, so this is an upper bound)
    rms = 12
    self_attention = max(4 * s * E + rms * E,  # normed input, q, k, v, RMS-norm temporaries
                         5 * s * E + 6 * E) + attention  # ... and the rotary output with its float32 halves
    cross_attention = max(3 * s * E + rms * E + 2 * s * T,  # running hidden, normed input, q, RMS of q; k, v
                          2 * s * E + (2 * s + rms) * T)  # ... RMS of the text keys
    if compact_modulation:
        persistent = 2 * s * E + fixed  # block input, temb [B, N, dim]
        phases = [
            2 * s * E,  # layer norm in the model dtype, modulated into a fresh tensor
            self_attention,
            2 * s * E,  # attention output and the gated residual
            s * E + c * E + 4 * E,  # cross-attention norm: diffusers' float32 copy and output
            cross_attention,
            2 * s * E + 2 * s * G,  # running hidden, normed input, up-projection and GELU output
        ]
    else:
        persistent = 8 * s * E + fixed  # block input, temb, timestep_proj [B, N, 6, dim]
        held = 24 * E  # scale_shift_table + temb.float(): [B, N, 6, dim] float32 for the whole block
        phases = [
            6 * c * E + held,  # temb.float() and the sum, both alive at the addition
            held + 12 * E,  # norm, 1 + scale, product (float32)
            held + self_attention,
            held + 2 * s * E + c * E + 8 * E,  # normed input, attention output, float32 residual terms
            held + cross_attention,
            held + 3 * s * E + 2 * s * G,  # running hidden, previous and current normed input, FFN
            held + 3 * s * E + 2 * c * E + 8 * E,  # FFN output and the float32 residual
        ]
    head = 8 * E + 12 * E  # [B, N, 2, dim] float32 shift/scale; norm, 1 + scale and product in float32
    return ActivationBytes(persistent, max(phases), head, attention)


def vae_activation_bytes(height: int, width: int, frames: int = 1, dtype: torch.dtype = torch.bfloat16,
                         decode: bool = True, tiling: bool = False, tile: int = VAE_TILE,
                         tile_stride: int = VAE_TILE_STRIDE) -> int:
    """Peak activation bytes of one VAE encode or decode call on ``frames`` frames of ``height`` x
    ``width``. With tiling only one tile (``tile`` pixels square) runs at a time, but the decoded
    tiles of the whole clip are kept until they are blended (their overlap included)."""
    size = _itemsize(dtype)
    per_pixel = VAE_DECODE_BYTES_PER_PIXEL_FP32 if decode else VAE_ENCODE_BYTES_PER_PIXEL_FP32
    span = tile if decode else 2 * tile  # diffusers' tiled encode reads the tile size in 2x2-patchified pixels
    pixels = min(height, span) * min(width, span) if tiling else height * width
    working = per_pixel * pixels * size // 4
    if not decode:
        return working
    video = frames * 3 * height * width * size
    kept = video * (tile / tile_stride) ** 2 if tiling else 2 * video  # tiles with overlap / frames concatenated
    return working + int(kept)


@dataclass(frozen=True)
class StagePeaks:
    """Estimated device bytes at the peak of each stage of a translation, in the pipeline's order:
    the text encoder alone, then VAE and transformer resident through encode, sampling and decode."""

    text: int
    encode: int
    sample: int
    decode: int

    @property
    def peak(self) -> int:
        return max(self.text, self.encode, self.sample, self.decode)

    def as_dict(self) -> dict:
        return {**asdict(self), "peak": self.peak}


def streamed_in_flight(total_blocks: int, resident: int | None) -> int:
    """Blocks on the device beyond the resident ones while offloading: the running one and the
    prefetched next one (offload.py)."""
    return 0 if resident is None else min(2, total_blocks - resident)


def transformer_device_bytes(config=None, dtype: torch.dtype = torch.bfloat16, fp8: bool = False,
                             resident_blocks: int | None = None, lora_rank: int = 0) -> int:
    """Transformer bytes on the device: everything outside the blocks, the resident blocks and the
    streamed ones in flight; ``lora_rank`` > 0 adds unfused adapters at that rank (merged LoRAs add nothing)."""
    config = config or WAN22_5B_CONFIG
    layers = config_value(config, "num_layers")
    weights = transformer_weight_bytes(config, dtype, fp8)
    on_device = layers if resident_blocks is None else resident_blocks + streamed_in_flight(layers, resident_blocks)
    lora = lora_bytes(config, lora_rank, dtype) * on_device // layers if lora_rank else 0
    return weights.other + weights.per_block * on_device + lora


def sampling_bytes(tokens: int, cfg_batch: int, dtype: torch.dtype = torch.bfloat16, fp8: bool = False,
                   resident_blocks: int | None = None, lora_rank: int = 0, compact_modulation: bool = True,
                   config=None) -> int:
    """Device bytes of the sampling stage alone: the transformer's share and one forward's activations
    (``cfg_batch`` 2: conditional and unconditional in one batch; 1: one after the other)."""
    config = config or WAN22_5B_CONFIG
    return transformer_device_bytes(config, dtype, fp8, resident_blocks, lora_rank) + \
        predict_flow_activation_bytes(config, tokens, cfg_batch, dtype, compact_modulation).peak


def translation_peaks(height: int, width: int, latent_frames: int, has_reference: bool, cfg_batch: int = 2,
                      dtype: torch.dtype = torch.bfloat16, compact_modulation: bool = True, fp8: bool = False,
                      resident_blocks: int | None = None, vae_tiling: bool = False,
                      text_encoder_on_device: bool = True, lora_rank: int = 0, config=None) -> StagePeaks:
    """Per-stage device memory of one translation. ``resident_blocks``: blocks kept on the device
    when the others are streamed (None = all resident). ``lora_rank``: unfused adapters at that
    rank (0: none, or merged)."""
    from .flops import in_context_tokens

    config = config or WAN22_5B_CONFIG
    transformer = transformer_device_bytes(config, dtype, fp8, resident_blocks, lora_rank)
    vae = vae_weight_bytes(dtype)
    tokens = in_context_tokens(config, latent_frames, height // 16, width // 16, has_reference)
    activations = predict_flow_activation_bytes(config, tokens, cfg_batch, dtype, compact_modulation).peak
    text = text_encoder_bytes(dtype) if text_encoder_on_device else 0
    frames = 4 * (latent_frames - 1) + 1
    return StagePeaks(
        text=text,
        encode=transformer + vae + vae_activation_bytes(height, width, frames, dtype, decode=False, tiling=vae_tiling),
        sample=transformer + vae + activations,
        decode=transformer + vae + vae_activation_bytes(height, width, frames, dtype, decode=True, tiling=vae_tiling),
    )
