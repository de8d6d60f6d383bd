"""Images in and out: sniff, check limits, and re-encode with ffmpeg into what WeCom and vision models take.

ffmpeg rather than Pillow: it is already required for voice, its static build decodes every format
here (JPEG, PNG, GIF, WebP incl. animated, HEIC, AVIF) where Pillow needs `pillow-heif` for HEIC,
and decoding runs in a child process with a time limit and a memory blast radius of its own.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from wxbot_common.media.errors import CorruptMediaError, MediaTooLargeError, UnsupportedMediaError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.sniff import ImageFormat, image_dimensions, sniff_image

WECOM_MAX_BYTES = 2 * 1024 * 1024
"""WeCom's current doc says 10 MB for images, older copies 2 MB: 2 MB is safe for both."""

# (longest side, JPEG quality 2 best .. 31 worst): tried in order until the result fits.
_LADDER: tuple[tuple[int, int], ...] = ((4096, 3), (4096, 6), (2560, 6), (2048, 8), (1600, 10), (1280, 12), (1024, 15))


@dataclass(frozen=True, slots=True)
class Image:
    """Image bytes with their sniffed format and, when known, pixel size."""

    data: bytes
    format: ImageFormat
    width: int | None = None
    height: int | None = None

    @property
    def mime(self) -> str:
        return self.format.mime

    @property
    def filename(self) -> str:
        """A name for a multipart upload; WeCom checks the suffix against the type."""
        return f"image.{'jpg' if self.format is ImageFormat.JPEG else self.format.value}"

    def data_url(self) -> str:
        """`data:image/…;base64,…` for an OpenAI-style `image_url` content part."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def check_size(size: int | None, limit: int, what: str = "image") -> None:
    """MediaTooLargeError when a known size (a Content-Length, a downloaded length) is over `limit`.

    Call it with the declared size before downloading and with the real length after; `None`
    (the channel did not say) passes, so the download itself must stop at `limit` too.
    """
    if size is not None and size > limit:
        raise MediaTooLargeError(f"{what} is {size} bytes, limit {limit}")


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image:
    """Sniff and measure without decoding; refuses text, unknown formats and oversized images."""
    check_size(len(data), max_bytes)
    fmt = sniff_image(data)
    dims = image_dimensions(data, fmt)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise MediaTooLargeError(f"image is {dims[0]}×{dims[1]} pixels, limit {max_pixels} pixels")
    if dims is not None and 0 in dims:
        raise CorruptMediaError("image header says 0 pixels")
    return Image(data, fmt, *(dims or (None, None)))


async def to_wecom_image(
    ffmpeg: Ffmpeg,
    data: bytes,
    *,
    max_bytes: int = WECOM_MAX_BYTES,
    max_input_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 50_000_000,
) -> Image:
    """A JPEG or PNG under `max_bytes` for `media/upload?type=image`.

    JPEG/PNG that already fit are returned unchanged; anything else (too big, GIF, WebP, HEIC…)
    becomes a JPEG, scaled down and recompressed step by step until it fits (transparency on white).
    """
    image = inspect_image(data, max_bytes=max_input_bytes, max_pixels=max_pixels)
    if image.format in (ImageFormat.JPEG, ImageFormat.PNG) and len(data) <= max_bytes:
        return image
    return await _shrink(ffmpeg, image, _LADDER, max_bytes)


async def to_vision_image(
    ffmpeg: Ffmpeg,
    data: bytes,
    *,
    max_side: int = 1536,
    max_bytes: int = 4 * 1024 * 1024,
    max_input_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 50_000_000,
) -> Image:
    """A JPEG or PNG a vision model accepts: long side ≤ `max_side`, ≤ `max_bytes` (first frame of a GIF).

    Vision APIs scale to ~1.5k pixels anyway, so larger images only cost upload time and tokens.
    """
    image = inspect_image(data, max_bytes=max_input_bytes, max_pixels=max_pixels)
    fits = image.width is not None and image.height is not None and max(image.width, image.height) <= max_side
    if image.format in (ImageFormat.JPEG, ImageFormat.PNG) and fits and len(data) <= max_bytes:
        return image
    ladder = tuple((min(side, max_side), q) for side, q in _LADDER if side >= 1024)
    return await _shrink(ffmpeg, image, ((max_side, 3), *ladder), max_bytes)


async def _shrink(ffmpeg: Ffmpeg, image: Image, ladder: Sequence[tuple[int, int]], max_bytes: int) -> Image:
    smallest = 0
    for side, quality in dict.fromkeys(ladder):
        try:
            out = await ffmpeg.run(image.data, _jpeg_args(side, quality))
        except CorruptMediaError as exc:
            if image.format in (ImageFormat.HEIC, ImageFormat.AVIF):
                raise UnsupportedMediaError(f"{image.format.value.upper()} image could not be decoded: {exc}") from exc
            raise
        if len(out) <= max_bytes:
            dims = image_dimensions(out, ImageFormat.JPEG)
            return Image(out, ImageFormat.JPEG, *(dims or (None, None)))
        smallest = len(out)
    raise MediaTooLargeError(f"image still {smallest} bytes after recompression, limit {max_bytes}")


def _jpeg_args(side: int, quality: int) -> list[str]:
    # Scale down only, keep the aspect ratio, flatten transparency onto white, one frame.
    graph = (
        f"[0:v]scale=w='min(iw,{side})':h='min(ih,{side})':force_original_aspect_ratio=decrease:flags=area,"
        "format=rgba,split[a][b];[a]drawbox=c=white@1:replace=1:t=fill[bg];[bg][b]overlay=format=auto,format=yuvj420p"
    )
    return ["-frames:v", "1", "-filter_complex", graph, "-c:v", "mjpeg", "-q:v", str(quality), "-f", "image2pipe"]
