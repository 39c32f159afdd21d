"""A tiny random UMT5 encoder (real structure: gated-GELU, relative-attention bias in every block,
32 buckets), a real SentencePiece model trained on a few sentences, and writers for the ComfyUI
single-file layouts: fp8-scaled (umt5_xxl_fp8_e4m3fn_scaled.safetensors) and plain (fp16/bf16/fp32).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from .fp8_scaled import fp8_scaled_tensors

# d_model 32 matches the tiny transformer's text_dim. vocab 300 leaves room above the tiny
# SentencePiece vocabulary, as the real 256384 embedding rows exceed the 256000 pieces.
TINY_UMT5_CONFIG = dict(
    vocab_size=300, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
)
WORLDWANDER_PROMPTS = ("Transform it into the first-person perspective.",
                       "Transform it into the third-person perspective.")
_WORDS = (" ".join(WORLDWANDER_PROMPTS) + " a person walks in the kitchen and picks up a cup of coffee while "
          "the camera follows from behind , she opens the door , turns left , reaches for a knife , cuts bread "
          "on a wooden board ; man woman child table chair window street car bicycle ball hand arm head view "
          "video frame scene light shadow red green blue running jumping cooking playing guitar reading "
          "book writing letter basketball soccer dancing cleaning washing").replace(".", " .").split()


def build_tiny_umt5(seed: int = 0) -> UMT5EncoderModel:
    """A UMT5EncoderModel with the real structure at tiny widths; every weight clearly non-trivial."""
    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(**TINY_UMT5_CONFIG)).eval()
    with torch.no_grad():
        for param in model.parameters():  # shared and encoder.embed_tokens are one Parameter
            param.add_(torch.randn_like(param) * 0.05)
    return model


def train_tiny_spiece(workdir) -> bytes:
    """Train a real unigram SentencePiece model (T5 ids: pad 0, eos 1, unk 2, no bos) on generated
    sentences that include the WorldWander prompts; writes workdir/spiece.model and returns its bytes."""
    import sentencepiece

    rng = random.Random(0)
    sentences = list(WORLDWANDER_PROMPTS) * 20
    sentences += [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) for _ in range(2000)]
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, model_type="unigram", vocab_size=256,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        num_threads=1, minloglevel=2)
    model_bytes = buffer.getvalue()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "spiece.model").write_bytes(model_bytes)
    return model_bytes


def _linear_weight_names(model: torch.nn.Module) -> set[str]:
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def _file_state(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    # ComfyUI's files hold shared.weight only; encoder.embed_tokens is the same tensor.
    return {k: v.detach() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def _spiece_tensor(spiece_bytes: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(spiece_bytes), dtype=torch.uint8).clone()


def save_umt5_fp8_scaled(model: UMT5EncoderModel, spiece_bytes: bytes, path, other_dtype=torch.float16,
                         with_scale_input: bool = False) -> None:
    """Write ComfyUI's fp8-scaled layout: each linear weight as float8_e4m3fn with a per-tensor
    ``<name>.scale_weight`` (optionally a ``<name>.scale_input`` of 1), other tensors in
    ``other_dtype``, the ``scaled_fp8`` marker and the ``spiece_model`` tokenizer bytes."""
    tensors = fp8_scaled_tensors(_file_state(model), _linear_weight_names(model), other_dtype, with_scale_input)
    tensors["spiece_model"] = _spiece_tensor(spiece_bytes)
    save_file(tensors, str(path))


def save_umt5_plain(model: UMT5EncoderModel, path, dtype=torch.float16, spiece_bytes: bytes | None = None) -> None:
    """Write the plain single-file layout (umt5_xxl_fp16.safetensors style), every tensor in ``dtype``."""
    tensors = {k: v.to(dtype).contiguous() for k, v in _file_state(model).items()}
    if spiece_bytes is not None:
        tensors["spiece_model"] = _spiece_tensor(spiece_bytes)
    save_file(tensors, str(path))
