"""VAE encode/decode in spatial tiles, so the VAE never sets the memory peak.

Time is already chunked by diffusers' AutoencoderKLWan: it encodes 1 + 4 + 4 ... frames and
decodes one latent frame per call, carrying causal-convolution caches between chunks, so its
working memory does not grow with the clip length. Space is not: an untiled decode at 704x1280
needs about 21 KB of float32 activations per output pixel (measured with the real Wan2.2 VAE
architecture; about 10 GB in bf16). diffusers' ``enable_tiling`` splits the frame into overlapping
tiles, decodes each through all frames, and blends the overlaps linearly.

Checked for the Wan2.2 VAE (2x2 patchified RGB, ``patch_size=2``): diffusers converts the tile
geometry to patchified units in both directions, and tests/test_memory_options.py rebuilds a tiled
decode from independent per-tile decodes and blends to check placement and blending exactly.
Tiles differ from the untiled result near the seams (a tile sees less context), so tiling is a
memory option, not an exact one. Note diffusers' encoder reads the tile size in patchified pixels:
an encoder tile covers twice the pixels of a decoder tile.
"""

from __future__ import annotations

from ..errors import InputError

DEFAULT_TILE = 256
DEFAULT_STRIDE = 192
_MULTIPLE = 32  # 16x VAE compression x 2x2 patch: keeps every tile on the latent and patch grid


def enable_vae_tiling(vae, tile: int = DEFAULT_TILE, stride: int = DEFAULT_STRIDE) -> None:
    """Tile encode and decode: ``tile`` x ``tile`` pixel tiles every ``stride`` pixels (the
    overlap, tile - stride, is blended). Both must be multiples of 32, stride < tile."""
    if not hasattr(vae, "enable_tiling") or not hasattr(vae, "tiled_decode"):
        raise InputError(f"vae: {type(vae).__name__} has no tiled encode/decode; expected diffusers' AutoencoderKLWan.")
    for name, value in (("tile", tile), ("stride", stride)):
        if not isinstance(value, int) or value <= 0 or value % _MULTIPLE:
            raise InputError(f"vae tiling: {name} {value!r} must be a positive multiple of {_MULTIPLE} pixels.")
    if stride >= tile:
        raise InputError(f"vae tiling: stride {stride} must be smaller than the tile {tile} so tiles overlap.")
    vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                      tile_sample_stride_height=stride, tile_sample_stride_width=stride)


def disable_vae_tiling(vae) -> None:
    vae.disable_tiling()


def vae_tiling_enabled(vae) -> bool:
    return bool(getattr(vae, "use_tiling", False))
