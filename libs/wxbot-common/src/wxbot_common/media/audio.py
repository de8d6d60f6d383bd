"""Voice in and out: any audio → 16 kHz mono WAV/MP3 for an ASR endpoint; TTS audio → WeCom AMR parts.

Facts (docs/media.md): WeCom app and Official Account voice messages are AMR-NB at 8 kHz (`#!AMR`);
SILK is personal-WeChat only and is refused. WeCom's `media/upload?type=voice` takes AMR only,
≤ 2 MB and ≤ 60 s; the Official Account takes AMR or MP3 with the same limits, so AMR serves both.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Literal

from wxbot_common.media import amr
from wxbot_common.media.errors import CorruptMediaError, EmptyMediaError, MediaTooLargeError, UnsupportedMediaError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.sniff import AudioFormat, sniff_audio

_MIME = {"wav": "audio/wav", "mp3": "audio/mpeg", "amr": "audio/amr"}


@dataclass(frozen=True, slots=True)
class Audio:
    """Converted audio: bytes, container (`wav`, `mp3`, `amr`) and exact duration."""

    data: bytes
    format: Literal["wav", "mp3", "amr"]
    duration_s: float

    @property
    def mime(self) -> str:
        return _MIME[self.format]

    @property
    def filename(self) -> str:
        """A name for a multipart upload (`voice.amr`); the endpoints look at its suffix."""
        return f"voice.{self.format}"


async def to_asr_audio(
    ffmpeg: Ffmpeg,
    data: bytes,
    *,
    fmt: Literal["wav", "mp3"] = "wav",
    sample_rate: int = 16_000,
    max_duration_s: float = 600.0,
) -> Audio:
    """Decode any voice note to mono `sample_rate` WAV (PCM s16) or MP3 for `/v1/audio/transcriptions`.

    WAV is the default: every Whisper-style server reads it, and 16 kHz mono is what they resample to.
    """
    pcm = await decode_pcm(ffmpeg, data, sample_rate=sample_rate)
    duration = len(pcm) / (2 * sample_rate)
    if duration > max_duration_s:
        raise MediaTooLargeError(f"audio is {duration:.0f} s, limit {max_duration_s:.0f} s")
    if fmt == "wav":
        return Audio(pcm_to_wav(pcm, sample_rate), "wav", duration)
    mp3 = await ffmpeg.run(
        pcm,
        ["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
        input_args=["-f", "s16le", "-ar", str(sample_rate), "-ac", "1"],
    )
    return Audio(mp3, "mp3", duration)


async def to_wecom_voice(
    ffmpeg: Ffmpeg,
    data: bytes,
    *,
    max_part_s: float = 59.0,
    max_part_bytes: int = 2_000_000,
) -> list[Audio]:
    """TTS output (MP3, WAV, Opus…) → AMR-NB 8 kHz mono 12.2 kbit/s parts, each a playable file.

    59 s rather than 60 leaves WeCom's duration check a margin; 12.2 kbit/s is ~92 KB a minute,
    so the byte limit only matters if a caller lowers it.
    """
    _refuse_unusable(data)
    encoded = await ffmpeg.run(
        data,
        ["-vn", "-ac", "1", "-ar", "8000", "-c:a", "libopencore_amrnb", "-b:a", "12.2k", "-f", "amr"],
    )
    parts = amr.split(encoded, max_part_s=max_part_s, max_part_bytes=max_part_bytes)
    return [Audio(part, "amr", amr.duration_s(part)) for part in parts]


async def probe_duration(ffmpeg: Ffmpeg, data: bytes) -> float:
    """Playing time in seconds: from the frames for AMR, the header for PCM WAV, else by decoding."""
    fmt = _refuse_unusable(data)
    if fmt is AudioFormat.AMR_NB:
        return amr.duration_s(data)
    if fmt is AudioFormat.WAV:
        try:
            with wave.open(io.BytesIO(data)) as w:
                nframes: int = w.getnframes()
                rate: int = w.getframerate()
                block: int = w.getsampwidth() * w.getnchannels()
            # A piped writer leaves the size fields at their maximum: trust them only if they fit.
            if 0 < nframes * block <= len(data):
                return nframes / rate
        except (wave.Error, EOFError):
            pass  # not PCM (or a streamed header): decode it instead
    pcm = await decode_pcm(ffmpeg, data, sample_rate=8000)
    return len(pcm) / (2 * 8000)


async def decode_pcm(ffmpeg: Ffmpeg, data: bytes, *, sample_rate: int) -> bytes:
    """Mono signed 16-bit little-endian samples; EmptyMediaError if the file holds no audio."""
    fmt = _refuse_unusable(data)
    if fmt is AudioFormat.AMR_NB:
        amr.frames(data)  # strict frame check: ffmpeg would decode garbage frames as noise
    try:
        pcm = await ffmpeg.run(data, ["-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-c:a", "pcm_s16le"])
    except EmptyMediaError:
        raise EmptyMediaError("no audio in the file") from None
    if len(pcm) < 2:
        raise EmptyMediaError("no audio in the file")
    return pcm[: len(pcm) - len(pcm) % 2]


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Wrap mono s16le samples in a WAV header with the real sizes (ffmpeg cannot when piping)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def _refuse_unusable(data: bytes) -> AudioFormat | None:
    fmt = sniff_audio(data)
    if fmt is AudioFormat.SILK:
        raise UnsupportedMediaError("SILK voice (personal WeChat) is not supported")
    if fmt is AudioFormat.AMR_NB and len(data) <= len(amr.MAGIC):
        raise EmptyMediaError("AMR file has no frames")
    if fmt is None and len(data) < 16:
        raise CorruptMediaError("too short to be audio")
    return fmt
