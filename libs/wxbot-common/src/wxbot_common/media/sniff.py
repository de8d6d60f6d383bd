"""What the bytes really are, from magic numbers: never trust a URL suffix or a Content-Type.

WeCom's `media/get` answers errors as JSON with HTTP 200, image URLs answer login pages as HTML, and
CowAgent saves every WeCom image as `.png` whatever it is — so every media path sniffs first.
"""

from __future__ import annotations

import struct
from enum import StrEnum

from wxbot_common.media.errors import EmptyMediaError, NotAnImageError, UnsupportedMediaError

_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


class ImageFormat(StrEnum):
    """Image formats we recognise; only JPEG and PNG go to WeCom as they are."""

    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    HEIC = "heic"
    AVIF = "avif"
    BMP = "bmp"

    @property
    def mime(self) -> str:
        return f"image/{self.value}"


class AudioFormat(StrEnum):
    """Audio containers we recognise; WeCom and Official Account voice is AMR-NB (8 kHz)."""

    AMR_NB = "amr"
    AMR_WB = "amr-wb"
    SILK = "silk"
    WAV = "wav"
    MP3 = "mp3"
    OGG = "ogg"
    FLAC = "flac"
    MP4 = "mp4"
    WEBM = "webm"


def describe_text(data: bytes) -> str | None:
    """'HTML', 'JSON', 'XML' or 'text' when the bytes look like text rather than media, else None."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "HTML"
    if head.startswith((b"{", b"[")):
        return "JSON"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "XML"
    sample = data[:512]
    if sample and all(b in b"\t\n\r" or 32 <= b < 127 for b in sample):
        return "text"
    return None


def sniff_image(data: bytes) -> ImageFormat:
    """The image format of `data`; raises EmptyMediaError, NotAnImageError (text) or UnsupportedMediaError."""
    if not data:
        raise EmptyMediaError("no bytes")
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ImageFormat.GIF
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if data[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if brands & _AVIF_BRANDS:
            return ImageFormat.AVIF
        if brands & _HEIC_BRANDS:
            return ImageFormat.HEIC
    if data.startswith(b"BM") and len(data) >= 26 and data[6:10] == bytes(4):  # reserved: zero
        return ImageFormat.BMP
    kind = describe_text(data)
    if kind:
        raise NotAnImageError(f"got {kind}, not an image")
    raise UnsupportedMediaError("not a JPEG, PNG, GIF, WebP, HEIC or AVIF image")


def sniff_audio(data: bytes) -> AudioFormat | None:
    """The audio format of `data`, or None when unknown (ffmpeg may still decode it).

    Raises EmptyMediaError for no bytes and UnsupportedMediaError for text (a JSON error body saved as voice).
    """
    if not data:
        raise EmptyMediaError("no bytes")
    if data.startswith(b"#!AMR\n"):
        return AudioFormat.AMR_NB
    if data.startswith(b"#!AMR-WB\n"):
        return AudioFormat.AMR_WB
    if data.startswith((b"#!SILK_V3", b"\x02#!SILK_V3")):
        return AudioFormat.SILK
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return AudioFormat.WAV
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return AudioFormat.MP3
    if data.startswith(b"OggS"):
        return AudioFormat.OGG
    if data.startswith(b"fLaC"):
        return AudioFormat.FLAC
    if data[4:8] == b"ftyp":
        return AudioFormat.MP4
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return AudioFormat.WEBM
    kind = describe_text(data)
    if kind:
        raise UnsupportedMediaError(f"got {kind}, not audio")
    return None


def image_dimensions(data: bytes, fmt: ImageFormat) -> tuple[int, int] | None:
    """(width, height) read from the header without decoding, or None when not cheaply known."""
    try:
        if fmt is ImageFormat.PNG and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if fmt is ImageFormat.GIF:
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if fmt is ImageFormat.BMP:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(int(w)), abs(int(h))
        if fmt is ImageFormat.WEBP:
            return _webp_dimensions(data)
        if fmt is ImageFormat.JPEG:
            return _jpeg_dimensions(data)
    except struct.error:
        return None
    return None


def _ftyp_brands(data: bytes) -> set[bytes]:
    size = int.from_bytes(data[:4], "big")
    box = data[8 : min(max(size, 16), 256)]
    return {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
