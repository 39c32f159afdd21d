"""The UMT5 tokenizer, found offline: from the SentencePiece model a ComfyUI single file carries as
its ``spiece_model`` uint8 tensor, from a ``.model`` file, or from a Diffusers/transformers
``tokenizer/`` folder. Both back-ends answer through one ``tokenize`` that appends EOS, truncates
and pads exactly as the Hugging Face UMT5 tokenizer does.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint_files import load_safetensors, read_safetensors_header
from ..errors import InputError, ModelFileError

SPIECE_TENSOR = "spiece_model"
PAD_ID = 0  # T5/UMT5 convention; padded positions are masked out anyway.
_TOKENIZER_FOLDER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")


class UMT5Tokenizer:
    """Common interface. Subclasses give ``encode_text`` (ids without special tokens), ``eos_id``
    and ``vocab_size`` (how many distinct ids the tokenizer can emit)."""

    source: str
    eos_id: int
    vocab_size: int

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def tokenize(self, texts: list[str], max_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """ids and attention mask, both LongTensor [B, L]; each row is the text's ids truncated to
        max_length - 1, then EOS, then PAD_ID up to L = the longest row in the batch."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InputError(f"texts: expected a non-empty list of strings, got {type(texts).__name__}.")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{index}]: expected a string, got {type(text).__name__}.")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise InputError(f"max_length: expected an integer >= 1 (room for the EOS token), got {max_length!r}.")
        rows = [self.encode_text(text)[: max_length - 1] + [self.eos_id] for text in texts]
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[index, : len(row)] = 1
        return ids, mask


class SentencePieceUMT5Tokenizer(UMT5Tokenizer):
    """Backed by the sentencepiece library on a serialized model (what ComfyUI uses)."""

    def __init__(self, model_proto: bytes, source: str):
        import sentencepiece

        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, TypeError) as exc:
            raise ModelFileError(source, f"does not hold a valid SentencePiece model ({exc}).",
                                 "a serialized SentencePiece tokenizer model") from None
        self.source = source
        self.eos_id = int(self.processor.eos_id())
        if self.eos_id < 0:
            raise ModelFileError(source, "holds a SentencePiece model without an EOS token.",
                                 "the UMT5 SentencePiece model (EOS id 1)")
        self.vocab_size = int(self.processor.get_piece_size())

    def encode_text(self, text: str) -> list[int]:
        return list(self.processor.encode(text))


class TransformersUMT5Tokenizer(UMT5Tokenizer):
    """Backed by a transformers tokenizer loaded from a local folder."""

    def __init__(self, tokenizer, source: str):
        if tokenizer.eos_token_id is None:
            raise ModelFileError(source, "holds a tokenizer without an EOS token.", "the UMT5 tokenizer (EOS '</s>')")
        self.tokenizer = tokenizer
        self.source = source
        self.eos_id = int(tokenizer.eos_token_id)
        self.vocab_size = len(tokenizer)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenizer_from_model_proto(model_proto: bytes, source: str) -> SentencePieceUMT5Tokenizer:
    return SentencePieceUMT5Tokenizer(model_proto, source)


def tokenizer_from_folder(folder: str | os.PathLike) -> TransformersUMT5Tokenizer:
    """A transformers tokenizer folder (tokenizer.json / tokenizer_config.json / spiece.model); never
    touches the network."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(folder, f"could not be read as a tokenizer folder ({exc}).",
                             "a Diffusers/transformers tokenizer folder with tokenizer.json or spiece.model") from None
    return TransformersUMT5Tokenizer(tokenizer, str(folder))


def read_spiece_model(path: str | os.PathLike, header=None) -> bytes | None:
    """The serialized SentencePiece model stored in a single file's ``spiece_model`` tensor, or None."""
    header = read_safetensors_header(path) if header is None else header
    info = header.get(SPIECE_TENSOR)
    if info is None:
        return None
    if info.dtype != "U8" or len(info.shape) != 1:
        raise ModelFileError(path, f"has a {SPIECE_TENSOR!r} tensor of dtype {info.dtype} and shape {info.shape}.",
                             "a 1-D uint8 tensor holding a serialized SentencePiece model")
    return load_safetensors(path, [SPIECE_TENSOR])[SPIECE_TENSOR].numpy().tobytes()


def is_tokenizer_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in _TOKENIZER_FOLDER_FILES)


def load_tokenizer(tokenizer_path: str | os.PathLike) -> UMT5Tokenizer:
    """A tokenizer the user pointed at: a tokenizer folder, a Diffusers pipeline folder with
    ``tokenizer/``, a SentencePiece ``.model`` file, or a safetensors file with ``spiece_model``."""
    path = Path(tokenizer_path)
    expected = ("a tokenizer folder, a Diffusers folder with tokenizer/, a SentencePiece .model file, "
                f"or a .safetensors file with a {SPIECE_TENSOR!r} tensor")
    if path.is_dir():
        if is_tokenizer_folder(path / "tokenizer"):
            return tokenizer_from_folder(path / "tokenizer")
        if is_tokenizer_folder(path):
            return tokenizer_from_folder(path)
        raise ModelFileError(path, "is a folder without tokenizer files.", expected)
    if not path.is_file():
        raise ModelFileError(path, "no such tokenizer file or folder.", expected)
    if path.suffix == ".safetensors":
        proto = read_spiece_model(path)
        if proto is None:
            raise ModelFileError(path, f"has no {SPIECE_TENSOR!r} tensor.", expected)
        return tokenizer_from_model_proto(proto, str(path))
    return tokenizer_from_model_proto(path.read_bytes(), str(path))
