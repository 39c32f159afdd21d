"""Prompt -> UMT5 embedding, as diffusers' WanPipeline (``_get_t5_prompt_embeds``) and the
WorldWander authors compute it: clean the prompt, tokenize with EOS, run the encoder with the
attention mask, keep each prompt's real-token vectors and zero everything after them up to
``max_length``.

The encoder runs over the batch's longest real length instead of ``max_length`` padding. That is
the same computation: padded keys are masked with the most negative float, so their softmax weight
is exactly 0; UMT5's relative-position bias depends only on the distance between real positions;
and layer norms and feed-forwards act per token. The padded rows are zeros either way.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean

from ..devices import resolve_device
from ..errors import InputError
from .text_encoder_loader import TextEncoder


def encode_prompts(text_encoder: TextEncoder, prompts: list[str], max_length: int = 512,
                   device=None) -> torch.Tensor:
    """float32 [B, max_length, d_model]: the encoder's last hidden state on each prompt's tokens
    (EOS included), zeros after them. ``device`` defaults to the encoder's device."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise InputError(f"prompts: expected a non-empty list of strings, got {prompts!r}.")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputError(f"prompts[{index}]: expected a string, got {type(prompt).__name__}.")
    # diffusers' own cleaning (HTML unescape, ftfy when installed, whitespace collapse).
    cleaned = [prompt_clean(prompt) for prompt in prompts]
    ids, mask = text_encoder.tokenizer.tokenize(cleaned, max_length=max_length)
    model_device = text_encoder.device
    with torch.no_grad():
        hidden = text_encoder.model(input_ids=ids.to(model_device),
                                    attention_mask=mask.to(model_device)).last_hidden_state
    out_device = model_device if device is None else resolve_device(device)
    hidden = hidden.to(device=out_device, dtype=torch.float32)
    keep = mask.to(out_device).bool().unsqueeze(-1)
    embeddings = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=out_device))
    return torch.nn.functional.pad(embeddings, (0, 0, 0, max_length - embeddings.shape[1]))
