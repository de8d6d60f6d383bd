"""Real media files made in code (PNG, WAV, AMR-NB) and the format sniffing the fakes judge uploads by.

The files are genuine: a PNG any decoder reads, a PCM WAV, an AMR-NB file of well-formed 12.2 kbit/s
frames (ffmpeg decodes it; the payload bits are pseudo-random, so it sounds like noise). Sniffing
reads magic bytes, as the real services do, never the file name.
"""

from __future__ import annotations

import io
import math
import random
import struct
import wave
import zlib

AMR_MAGIC = b"#!AMR\n"
AMR_FRAME_MS = 20
# Bytes after the one-byte header of an AMR-NB frame, by frame type (0-7 speech modes, 8 SID, 15 no data).
AMR_FRAME_BYTES = {0: 12, 1: 13, 2: 15, 3: 17, 4: 19, 5: 20, 6: 26, 7: 31, 8: 5, 15: 0}

MIME_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "heic": "image/heic",
    "amr": "audio/amr",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "webm": "audio/webm",
    "mp4": "video/mp4",
}


def sniff(data: bytes) -> str | None:
    """The format of `data` by its magic bytes (a key of MIME_TYPES), or None."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(AMR_MAGIC):
        return "amr"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head[4:8] == b"ftyp":
        return "heic" if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1") else "mp4"
    return None


def mime_type(data: bytes, default: str = "application/octet-stream") -> str:
    kind = sniff(data)
    return MIME_TYPES[kind] if kind else default


def png_bytes(width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (220, 120, 40)) -> bytes:
    """A real PNG: one colour with a diagonal stripe (so it is not a trivial single-colour file)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    pixel, stripe = bytes(rgb), bytes(255 - c for c in rgb)
    rows = bytearray()
    for y in range(height):
        row = bytearray(pixel * width)
        x0 = y * width // max(1, height)
        for x in range(max(0, x0 - 2), min(width, x0 + 3)):
            row[3 * x : 3 * x + 3] = stripe
        rows += b"\x00" + row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


def wav_bytes(seconds: float = 1.0, rate: int = 16000, frequency: float = 440.0) -> bytes:
    """A real 16-bit mono PCM WAV holding a sine tone."""
    frames = int(seconds * rate)
    samples = (int(12000 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()


def amr_bytes(seconds: float = 1.0, seed: int = 0) -> bytes:
    """A real AMR-NB file (as WeCom's voice messages are): `seconds` of 12.2 kbit/s frames."""
    rng = random.Random(seed)
    frame_type = 7
    header = bytes([(frame_type << 3) | 0x04])  # quality bit set
    frames = max(1, round(seconds * 1000 / AMR_FRAME_MS))
    body = b"".join(header + rng.randbytes(AMR_FRAME_BYTES[frame_type]) for _ in range(frames))
    return AMR_MAGIC + body


def amr_duration_s(data: bytes) -> float | None:
    """Playing time of an AMR-NB file, or None when it is not one (bad magic, a broken frame)."""
    if not data.startswith(AMR_MAGIC):
        return None
    pos, frames = len(AMR_MAGIC), 0
    while pos < len(data):
        frame_type = (data[pos] >> 3) & 0x0F
        size = AMR_FRAME_BYTES.get(frame_type)
        if size is None or pos + 1 + size > len(data):
            return None
        pos += 1 + size
        frames += 1
    return frames * AMR_FRAME_MS / 1000 if frames else None
