"""The prompt table: every prompt a run can use (the task's fixed prompt, captions, and "" for prompt
dropout) encoded by UMT5 once, kept on the CPU without their zero padding, and padded back to 512
tokens when a batch needs them. The text encoder is then freed and never sits beside the transformer.
"""

from __future__ import annotations

import hashlib

import torch

from wan_egoexo.errors import InputError
from wan_egoexo.in_context.tasks import Task
from wan_egoexo.models.text_encoding import encode_prompts

MAX_TEXT_TOKENS = 512
DROPPED_PROMPT = ""


def sample_prompt(task: Task, caption: str | None) -> str:
    """A pair's caption when it has one, else the task's fixed training prompt."""
    return caption if caption else task.prompt


def prompt_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def trim_padding(embedding: torch.Tensor) -> torch.Tensor:
    """[L, D] -> the rows up to the last non-zero one (encode_prompts zeroes everything after the real
    tokens, so padding back with zeros restores the exact tensor)."""
    nonzero = embedding.abs().amax(dim=-1) > 0
    length = int(nonzero.nonzero().max()) + 1 if bool(nonzero.any()) else 1
    return embedding[:length].clone()


class PromptTable:
    """text -> trimmed float32 embedding [L, D] on the CPU."""

    def __init__(self, embeddings: dict[str, torch.Tensor]):
        self.embeddings = dict(embeddings)

    def __contains__(self, text: str) -> bool:
        return text in self.embeddings

    def texts(self) -> list[str]:
        return list(self.embeddings)

    def batch(self, texts, device=None, length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
        """[len(texts), length, D] float32, each embedding zero-padded to ``length``."""
        missing = [t for t in texts if t not in self.embeddings]
        if missing:
            raise InputError(f"prompts: no embedding for {missing[:3]!r}; expected prompts encoded beforehand "
                             "(re-run prepare if the captions changed).")
        rows = [torch.nn.functional.pad(self.embeddings[t], (0, 0, 0, length - self.embeddings[t].shape[0]))
                for t in texts]
        return torch.stack(rows).to(device) if device is not None else torch.stack(rows)


def encode_prompt_table(text_encoder, texts, chunk: int = 1) -> PromptTable:
    """Encode each distinct text once with the core's encode_prompts (512-padded, zeros after the real
    tokens). One prompt per call by default, so an embedding never depends on which other prompts
    shared its batch (the cache and a run from videos then hold bit-identical embeddings)."""
    unique = list(dict.fromkeys(texts))
    embeddings = {}
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        encoded = encode_prompts(text_encoder, part, max_length=MAX_TEXT_TOKENS, device="cpu")
        for text, embedding in zip(part, encoded):
            embeddings[text] = trim_padding(embedding.float())
    return PromptTable(embeddings)
