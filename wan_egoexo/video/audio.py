"""A clip's sound for the span the translation covers: read as samples (ComfyUI's AUDIO), or carried
from the source file into the written video, trimmed to the video's length.

Writing copies the source's audio packets when the codec can go into the output container (AAC,
MP3, Opus ... into mp4) and re-encodes it to AAC otherwise (PCM, Vorbis ...), so the sound is never
degraded without need. Samples handed in by ComfyUI are encoded to AAC. Everything runs through the
ffmpeg binary that imageio-ffmpeg ships; no torchaudio is needed.
"""

from __future__ import annotations

import logging
import math
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .containers import file_url, input_args
from .ffmpeg_process import FfmpegProcess, ffmpeg_exe, ffmpeg_problem

# Audio codecs each output container takes as they are (ffmpeg's muxers accept them without flags).
_COPYABLE = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
    ".mkv": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "vorbis", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
}
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
MAX_AUDIO_SECONDS = 6 * 3600  # samples held for ComfyUI: 6 hours of 48 kHz stereo is 8 GB; more is refused
MUX_TIMEOUT_S = 600

logger = logging.getLogger(__name__)


@dataclass
class AudioClip:
    """Samples float32 [channels, samples] in -1..1 at ``sample_rate`` (ComfyUI's AUDIO, one clip)."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.waveform.shape[1] / self.sample_rate


@dataclass(frozen=True)
class SourceAudio:
    """The first audio stream of ``path`` from ``start`` (seconds from the file's start), to be carried
    into a written video; ``codec`` decides between copying and re-encoding."""

    path: str
    start: float
    codec: str
    sample_rate: int = 48000
    channels: int = 2


def can_copy(codec: str, suffix: str) -> bool:
    return codec in _COPYABLE.get(suffix.lower(), set())


def read_audio(path, stream, start: float, seconds: float) -> AudioClip | None:
    """Samples of ``stream`` (video_probe.AudioStream) from ``start`` for ``seconds``; None without a stream."""
    if stream is None or seconds <= 0:
        return None
    if seconds > MAX_AUDIO_SECONDS:
        raise InputError(f"{path}: {seconds:.0f} s of audio asked for; at most {MAX_AUDIO_SECONDS} s are read "
                         "into memory at once (translate a shorter part).")
    channels = max(1, int(stream.channels))
    args = ["-loglevel", "error", "-ss", f"{max(0.0, start):.6f}", "-t", f"{seconds:.6f}", *input_args(path),
            "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(stream.sample_rate), "-f", "f32le",
            "-acodec", "pcm_f32le", "-"]
    limit = (int(math.ceil(seconds * stream.sample_rate)) + stream.sample_rate) * channels * 4
    chunks, size = [], 0
    with FfmpegProcess(args, path) as ff:
        while size < limit:
            chunk = ff.stdout.read(min(1 << 20, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        code = ff.wait(MUX_TIMEOUT_S) if size < limit else 0
        if code:
            logger.warning("%s: its audio could not be read (%s); continuing without it.", path,
                           ffmpeg_problem(ff.stderr_text()))
            return None
    data = np.frombuffer(b"".join(chunks), dtype=np.float32)
    data = data[: data.shape[0] // channels * channels].reshape(-1, channels).T
    wanted = int(round(seconds * stream.sample_rate))
    return AudioClip(np.ascontiguousarray(data[:, :wanted]), int(stream.sample_rate))


# ---------------------------------------------------------------- ComfyUI's AUDIO

def to_comfy_audio(clip: AudioClip | None):
    """ComfyUI's AUDIO dict {"waveform": float tensor [1, channels, samples], "sample_rate": int}, or None."""
    if clip is None:
        return None
    import torch  # noqa: PLC0415

    return {"waveform": torch.from_numpy(clip.waveform.copy())[None], "sample_rate": int(clip.sample_rate)}


def from_comfy_audio(audio, name: str = "audio") -> AudioClip | None:
    """An AudioClip from ComfyUI's AUDIO (None passes through); the first clip of a batch is used."""
    if audio is None:
        return None
    waveform = audio.get("waveform") if isinstance(audio, dict) else None
    rate = audio.get("sample_rate") if isinstance(audio, dict) else None
    if not hasattr(waveform, "shape") or len(waveform.shape) not in (2, 3):
        raise InputError(f"{name}: expected ComfyUI's AUDIO ({{'waveform': [batch, channels, samples], "
                         f"'sample_rate': int}}), got {type(audio).__name__}.")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 1000 <= int(rate) <= 384_000:
        raise InputError(f"{name}: sample_rate {rate!r} is invalid; expected an integer from 1000 to 384000 Hz.")
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().float().cpu().numpy()
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 3:
        if waveform.shape[0] > 1:
            warnings.warn(f"{name}: holds {waveform.shape[0]} clips; only the first is saved.", stacklevel=2)
        waveform = waveform[0]
    if not 1 <= waveform.shape[0] <= 64:
        raise InputError(f"{name}: {waveform.shape[0]} channels; expected 1 to 64 ([batch, channels, samples]).")
    if not np.isfinite(waveform).all():
        raise InputError(f"{name}: the waveform holds NaN or infinite samples; expected finite values in -1..1.")
    return AudioClip(np.ascontiguousarray(np.clip(waveform, -1.0, 1.0)), int(rate))


# ---------------------------------------------------------------- writing

def _aac_args(rate: int, channels: int) -> list[str]:
    args = ["-c:a", "aac", "-b:a", "192k"]
    if rate not in AAC_RATES:
        args += ["-ar", "48000"]
    if channels > 8:
        args += ["-ac", "2"]
    return args


def mux_audio(video_path: Path, out_path: Path, audio, seconds: float) -> None:
    """Write ``out_path``: the video stream of ``video_path`` (copied) and ``audio`` (a SourceAudio or an
    AudioClip) trimmed to ``seconds``."""
    common = ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-t", f"{seconds:.6f}"]
    if out_path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        common += ["-movflags", "+faststart"]
    if isinstance(audio, SourceAudio):
        copy = can_copy(audio.codec, out_path.suffix)
        codec = ["-c:a", "copy"] if copy else _aac_args(audio.sample_rate, audio.channels)
        cmd = [*input_args(video_path), "-ss", f"{max(0.0, audio.start):.6f}", *input_args(audio.path)]
        data = None
    else:
        channels = audio.waveform.shape[0]
        cmd = [*input_args(video_path), "-f", "f32le", "-ar", str(audio.sample_rate), "-ac", str(channels),
               "-protocol_whitelist", "pipe", "-i", "pipe:0"]
        codec = _aac_args(audio.sample_rate, channels)
        data = np.ascontiguousarray(audio.waveform.T, dtype=np.float32).tobytes()
    args = [ffmpeg_exe(), "-hide_banner", "-y", "-loglevel", "error", *cmd, *common, *codec, file_url(out_path)]
    try:
        result = subprocess.run(args, input=data, capture_output=True, timeout=MUX_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(f"{out_path}: adding the audio took longer than {MUX_TIMEOUT_S} s.") from None
    if result.returncode != 0:
        raise InputError(f"{out_path}: adding the audio failed "
                         f"({ffmpeg_problem(result.stderr.decode('utf-8', 'replace'))}); use --no-audio to skip it.")
