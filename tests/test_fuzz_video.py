"""Fuzzing the video reader (issue 11, the video part): valid tiny clips and frames, mutated by bit flips,
truncation, header edits and huge declared sizes or durations, must each give a correct fitted clip or an
InputError that names the file; never another exception (a raw traceback for a user), and the reader's
memory must not grow past a stated bound. Seeded and bounded in time, so a failure reproduces."""

import os
import re
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from media_tools import constant_times, make_clip
from wan_egoexo.video.clip_reader import read_fitted_clip
from wan_egoexo.errors import InputError
from wan_egoexo.video.fit import FitOptions

SEED = int(os.environ.get("WAN_EGOEXO_FUZZ_SEED", "20251129"))
TIME_BUDGET_S = float(os.environ.get("WAN_EGOEXO_FUZZ_SECONDS", "25"))
MIN_CASES = 24
MEMORY_BOUND_MB = 300  # growth of this process's peak over the whole run; ffmpeg's costs are its own
FIT = FitOptions(width=32, height=32, max_frames=9, mode="stretch")


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Valid inputs of each kind the reader takes."""
    root = tmp_path_factory.mktemp("seeds")
    from PIL import Image

    files = {
        "mp4": make_clip(root / "clip.mp4", constant_times(12, 8.0), audio="aac", extra=["-movflags", "+faststart"]),
        "mkv": make_clip(root / "clip.mkv", constant_times(12, 8.0), extra=["-c:v", "png"]),
        "webm": make_clip(root / "clip.webm", constant_times(12, 8.0)),
        "mov": make_clip(root / "clip.mov", constant_times(12, 8.0), audio="pcm_s16le"),
    }
    png = root / "still.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(png)
    files["png"] = png
    return {kind: path.read_bytes() for kind, path in files.items()}


# ---------------------------------------------------------------- mutations

def flip_bits(data: bytes, rng) -> bytes:
    out = bytearray(data)
    for position in rng.integers(0, len(out) * 8, rng.integers(1, 24)):
        out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def truncate(data: bytes, rng) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def edit_header(data: bytes, rng) -> bytes:
    out = bytearray(data)
    span = min(len(out), 1024)
    for position in rng.integers(0, span, rng.integers(1, 16)):
        out[position] = int(rng.integers(0, 256))
    return bytes(out)


def huge_sizes(data: bytes, rng) -> bytes:
    """Claim enormous frames or durations where the formats declare them."""
    out = bytearray(data)
    big = int(rng.choice([16000, 65535, 1 << 20]))
    for match in re.finditer(rb"IHDR", out):  # PNG (stills, and PNG frames in Matroska)
        i = match.start()
        out[i + 4:i + 12] = struct.pack(">II", big, big)
        out[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(out[i:i + 17])))
    for match in re.finditer(rb"tkhd", out):  # MP4/MOV track header: 16.16 fixed-point width and height
        end = match.start() + 4 + (96 if out[match.start() + 4] == 1 else 84)
        if end <= len(out):
            out[end - 8:end] = struct.pack(">II", big << 16 & 0xFFFFFFFF, big << 16 & 0xFFFFFFFF)
    for match in re.finditer(rb"avc1", out):  # sample entry: 16-bit width and height
        i = match.start() + 4 + 24
        if i + 4 <= len(out):
            out[i:i + 4] = struct.pack(">HH", min(big, 65535), min(big, 65535))
    for match in re.finditer(rb"mdhd", out):  # media timescale: makes the frame rate absurd
        i = match.start() + 4 + (20 if out[match.start() + 4] == 1 else 12)
        if i + 4 <= len(out):
            out[i:i + 4] = struct.pack(">I", int(rng.choice([1, 2, 0xFFFFFFFF])))
    for element in (b"\xb0", b"\xba"):  # Matroska PixelWidth / PixelHeight with a 2-byte value
        for match in re.finditer(re.escape(element) + rb"\x82", out):
            out[match.start() + 2:match.start() + 4] = struct.pack(">H", min(big, 65535))
    return bytes(out)


MUTATIONS = (flip_bits, truncate, edit_header, huge_sizes)


# ---------------------------------------------------------------- the check

def check_one(path) -> str:
    """'ok' or 'refused'; anything but a correct result or a named InputError fails the test."""
    try:
        clip = read_fitted_clip(path, FIT)
    except InputError as exc:
        assert path.name in str(exc) or "out of memory" in str(exc), f"error does not name the file: {exc}"
        return "refused"
    video = clip.video
    assert video.shape[0] == 3 and video.shape[2:] == (32, 32) and (video.shape[1] - 1) % 4 == 0
    assert video.shape[1] <= 9 and torch.isfinite(video).all() and video.abs().max() <= 1.0
    samples = clip.audio_samples()
    if samples is not None:
        assert np.isfinite(samples.waveform).all()
    return "ok"


def test_mutated_videos_give_a_clip_or_a_named_error(seeds, tmp_path):
    rng = np.random.default_rng(SEED)
    kinds = sorted(seeds)
    start, peak_before = time.monotonic(), rss_peak_mb()
    outcomes = {"ok": 0, "refused": 0}
    case = 0
    while case < MIN_CASES or time.monotonic() - start < TIME_BUDGET_S:
        kind = kinds[case % len(kinds)]
        mutation = MUTATIONS[(case // len(kinds)) % len(MUTATIONS)]
        path = tmp_path / f"case{case:04d}_{mutation.__name__}.{kind}"
        path.write_bytes(mutation(seeds[kind], rng))
        try:
            outcomes[check_one(path)] += 1
        except AssertionError as exc:
            raise AssertionError(f"seed {SEED}, case {case} ({kind}, {mutation.__name__}): {exc}") from None
        except Exception as exc:  # the failure this test exists for: kept with its case for reproduction
            raise AssertionError(f"seed {SEED}, case {case} ({kind}, {mutation.__name__}): raw "
                                 f"{type(exc).__name__}: {exc}") from exc
        path.unlink()
        case += 1
        if time.monotonic() - start > 3 * TIME_BUDGET_S:
            break
    growth = rss_peak_mb() - peak_before
    print(f"fuzz: {case} cases, {outcomes}, peak RSS growth {growth:.0f} MB")
    assert growth < MEMORY_BOUND_MB
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0  # both paths were exercised


def test_the_unmutated_seeds_read_correctly(seeds, tmp_path):
    for kind, data in seeds.items():
        path = tmp_path / f"seed.{kind}"
        path.write_bytes(data)
        assert check_one(path) == "ok"
