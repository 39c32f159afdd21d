"""Prompt embeddings cached on disk, so repeat runs with the fixed WorldWander prompts never load
UMT5 (5.7 B parameters, 11 GB in bf16).

A cache entry is one safetensors file named by a SHA-256 over: the text encoder's fingerprint, the
prompt, the padded length and the encoder's compute dtype. The fingerprint is content-based, so a
moved or copied encoder still hits and a different encoder never does: for each weight file, its
safetensors header, its size and three 1 MiB samples of its tensor data (start, middle, end), plus
the small files (config, tokenizer) of a Diffusers folder. Entries are written atomically
(wan_egoexo.atomic_files), so an interrupted run never leaves a partial entry under a real name.

Each entry carries a SHA-256 of its tensor bytes in its metadata, checked on every read: any damage
(NaN, random bytes, one flipped bit, a truncated file), a width other than the encoder's, an old
entry without a checksum, or something other than a regular file in its place (a directory, a
symlink) is a miss, so the prompt is encoded again and the entry rewritten atomically.

Only the prompt's real-token rows are stored; the zero padding up to ``max_length`` is rebuilt.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import stat
import warnings
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic_files import aside_path, atomic_path
from ..models.checkpoint_files import (diffusers_weight_files, find_diffusers_component, open_safetensors,
                                read_safetensors_header)
from ..devices import resolve_device, resolve_dtype
from ..errors import InputError, ModelFileError, NonFiniteError

CACHE_ENV = "WAN_EGOEXO_CACHE"
FORMAT_VERSION = "1"  # part of every entry's name (the key)
ENTRY_VERSION = "2"  # inside each entry: "2" entries carry the checksum of their tensor bytes
_HEADER_ROOM = 1 << 20  # an entry's header: dtype, shape, offsets and its metadata (the prompt text)
_SAMPLE_BYTES = 1 << 20
_SMALL_FILE_BYTES = 4 << 20


def default_prompt_cache_dir() -> Path:
    """$WAN_EGOEXO_CACHE/prompts, else $XDG_CACHE_HOME/wan_egoexo/prompts, else ~/.cache/wan_egoexo/prompts."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "prompts"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "wan_egoexo" / "prompts"


def _hash_weight_file(digest, path: Path) -> None:
    read_safetensors_header(path)  # raises ModelFileError naming the file if it is not a complete safetensors
    size = path.stat().st_size
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        digest.update(handle.read(header_len))
        data_start, data_len = 8 + header_len, size - 8 - header_len
        for offset in sorted({0, max(0, data_len // 2 - _SAMPLE_BYTES // 2), max(0, data_len - _SAMPLE_BYTES)}):
            handle.seek(data_start + offset)
            digest.update(handle.read(_SAMPLE_BYTES))
    digest.update(str(size).encode())


def text_encoder_fingerprint(path) -> str:
    """A content fingerprint (hex SHA-256) of a text encoder file or Diffusers folder."""
    path = Path(os.fspath(path)).expanduser()
    digest = hashlib.sha256(b"wan_egoexo text encoder v1\0")
    if path.is_dir():
        component = find_diffusers_component(path, "text_encoder")
        if component is None:
            raise ModelFileError(path, "is a folder without config.json or a text_encoder/ subfolder.",
                                 "a UMT5 text encoder file or Diffusers folder")
        folders = [component] + [f for f in (component.parent / "tokenizer",) if f.is_dir()]
        for folder in folders:
            for file in sorted(folder.iterdir()):
                if file.is_file() and file.suffix != ".safetensors" and file.stat().st_size <= _SMALL_FILE_BYTES:
                    digest.update(file.name.encode() + b"\0" + file.read_bytes())
        for file in diffusers_weight_files(component):
            digest.update(file.name.encode() + b"\0")
            _hash_weight_file(digest, file)
    else:
        _hash_weight_file(digest, path)
    return digest.hexdigest()


def prompt_cache_key(fingerprint: str, prompt: str, max_length: int = 512, dtype: torch.dtype = torch.float32) -> str:
    """The entry name for one prompt: SHA-256 of everything that determines its embedding."""
    record = json.dumps({"version": FORMAT_VERSION, "encoder": fingerprint, "prompt": prompt,
                         "max_length": max_length, "dtype": str(dtype)}, sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()


def text_encoder_width(path) -> int | None:
    """The embedding width (d_model) of a text encoder file or Diffusers folder, read from its header;
    None when the header does not say."""
    path = Path(os.fspath(path)).expanduser()
    files = [path]
    if path.is_dir():
        component = find_diffusers_component(path, "text_encoder")
        files = diffusers_weight_files(component) if component is not None else []
    for file in files:
        header = read_safetensors_header(file)
        for key in ("shared.weight", "encoder.embed_tokens.weight"):
            if key in header and len(header[key].shape) == 2:
                return int(header[key].shape[1])
    return None


def _checksum(rows: torch.Tensor) -> str:
    return hashlib.sha256(rows.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def _clear_wrong_kind(path: Path) -> None:
    """Remove what is not a regular file at an entry's place (a directory, a symlink, a fifo)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        aside = aside_path(path)
        os.replace(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    elif not stat.S_ISREG(mode):
        path.unlink()


def save_cached_embedding(path, embedding: torch.Tensor, prompt: str) -> Path:
    """Write one prompt's embedding [max_length, D] (only its non-zero rows) atomically, with the
    SHA-256 of its bytes; replaces whatever is at ``path``. Refuses a non-finite embedding."""
    if embedding.ndim != 2:
        raise InputError(f"embedding: expected [max_length, D], got {tuple(embedding.shape)}.")
    if not bool(torch.isfinite(embedding).all()):
        raise NonFiniteError(f"the text encoder produced NaN/Inf for the prompt {prompt[:60]!r}: its weights are "
                             "damaged (download the text encoder again).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nonzero = embedding.abs().amax(dim=1).nonzero()
    real = int(nonzero.max()) + 1 if len(nonzero) else 0
    rows = embedding[:real].detach().to("cpu", torch.float32).contiguous()
    metadata = {"prompt": prompt, "max_length": str(embedding.shape[0]), "version": ENTRY_VERSION,
                "sha256": _checksum(rows)}
    _clear_wrong_kind(path)
    with atomic_path(path) as temporary:
        save_file({"embedding": rows}, str(temporary), metadata=metadata)
    return path


def load_cached_embedding(path, prompt: str, max_length: int, width: int | None = None) -> torch.Tensor | None:
    """The cached embedding [max_length, D] float32, or None (a miss) when the entry is absent, not a
    regular file, unreadable, damaged (checksum), not finite, not for this prompt or of another width."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if width is not None and info.st_size > 8 + _HEADER_ROOM + len(prompt.encode()) * 6 + max_length * width * 4:
        return None  # far larger than any entry for this encoder: never read it
    try:
        header = read_safetensors_header(path)
        if set(header) != {"embedding"} or header["embedding"].dtype != "F32":
            return None
        with open_safetensors(path) as handle:
            metadata = handle.metadata() or {}
            rows = handle.get_tensor("embedding")
    except ModelFileError:  # a damaged entry is only a miss; it is rewritten
        return None
    if metadata.get("version") != ENTRY_VERSION or metadata.get("prompt") != prompt \
            or metadata.get("max_length") != str(max_length) or rows.ndim != 2 or rows.shape[0] > max_length \
            or (width is not None and rows.shape[1] != width) or metadata.get("sha256") != _checksum(rows) \
            or not bool(torch.isfinite(rows).all()):
        return None
    return torch.nn.functional.pad(rows, (0, 0, 0, max_length - rows.shape[0]))


def release_text_encoder(text_encoder) -> None:
    """Drop the model's weights from the device now (callers must drop their own reference too)."""
    model = getattr(text_encoder, "model", None)
    if model is not None:
        model.to("meta")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _store(path: Path, embedding: torch.Tensor, prompt: str) -> None:
    """Cache an embedding; the cache is only an optimisation, so a write that fails (disk full, read-only
    folder, no permission) is a warning and the run goes on with the embedding it has."""
    try:
        save_cached_embedding(path, embedding, prompt)
    except OSError as exc:  # WriteError included
        reason = exc.strerror or str(exc)
        warnings.warn(f"prompt cache: could not write {path} ({reason}); the prompt is encoded again next time "
                      "(free some space, or pass --no-prompt-cache / another --prompt-cache folder).", stacklevel=3)


def encode_prompts_cached(text_encoder_path, prompts: list[str], cache_dir=None, max_length: int = 512,
                          device=None, dtype=None, load=None, encode=None) -> tuple[torch.Tensor, dict]:
    """Embeddings [len(prompts), max_length, D] float32 on the CPU, from the cache where present.

    The text encoder is loaded (on ``device``, "cpu" to keep the GPU free) only when a prompt is
    missing, used for the missing prompts, stored, and released before returning. ``load`` and
    ``encode`` default to load_text_encoder and encode_prompts (tests inject counters).
    Returns (embeddings, {"hits": n, "misses": n, "loaded": bool}).
    """
    from ..models.text_encoder_loader import load_text_encoder
    from ..models.text_encoding import encode_prompts

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"prompts: expected a non-empty list of strings, got {prompts!r}.")
    load = load or load_text_encoder
    encode = encode or encode_prompts
    compute_dtype = resolve_dtype(dtype, resolve_device(device))
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_prompt_cache_dir()
    if cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"prompt cache: {cache_dir} is not a folder; expected a folder for the cache (or none yet).")
    fingerprint = text_encoder_fingerprint(text_encoder_path)
    width = text_encoder_width(text_encoder_path)
    paths = [cache_dir / f"{prompt_cache_key(fingerprint, p, max_length, compute_dtype)}.safetensors" for p in prompts]
    found = [load_cached_embedding(path, p, max_length, width) for path, p in zip(paths, prompts)]
    missing = sorted({p for p, hit in zip(prompts, found) if hit is None})
    if missing:
        text_encoder = load(text_encoder_path, device=device, dtype=dtype)
        try:
            fresh = dict(zip(missing, encode(text_encoder, missing, max_length=max_length, device="cpu")))
        finally:
            release_text_encoder(text_encoder)
            del text_encoder
        for index, (path, prompt) in enumerate(zip(paths, prompts)):
            if found[index] is None:
                found[index] = fresh[prompt].float()
                _store(path, found[index], prompt)
    widths = {tuple(f.shape) for f in found}
    if len(widths) != 1:
        raise ModelFileError(cache_dir, f"holds embeddings of different shapes {sorted(widths)} for one encoder.",
                             "one width for every prompt (clear the cache folder)")
    hits = len(prompts) - sum(1 for p in prompts if p in missing)
    return torch.stack(found), {"hits": hits, "misses": len(prompts) - hits, "loaded": bool(missing)}
