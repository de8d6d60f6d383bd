"""Downloading a media file by URL within a size limit: refused by its Content-Length before the
body is read, and counted while reading (a server may omit or understate the length).

Used for the image URLs channels hand us (WeCom's `PicUrl`, the AI bot's encrypted image URLs,
bridge frames); what the bytes are is decided afterwards by sniffing, never by the Content-Type.
"""

from __future__ import annotations

from dataclasses import dataclass

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.media.errors import MediaError
from wxbot_common.media.image import check_size


class DownloadError(MediaError):
    """The URL could not be fetched: unreachable, not http(s), or an HTTP error status."""

    reason = "download"


@dataclass(frozen=True, slots=True)
class Downloaded:
    data: bytes
    content_type: str


async def download(http: TracedHttp, url: str, max_bytes: int) -> Downloaded:
    """GET `url`; `MediaTooLargeError` past `max_bytes` (declared or counted), `DownloadError` otherwise."""
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"not an http(s) URL: {url[:80]!r}")
    try:
        async with http.request("GET", url) as resp:
            if resp.status != 200:
                raise DownloadError(f"{url[:80]} answered HTTP {resp.status}")
            check_size(resp.content_length, max_bytes)
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk
                check_size(len(buffer), max_bytes)
            return Downloaded(bytes(buffer), resp.headers.get("content-type", ""))
    except HttpError as exc:
        raise DownloadError(f"{url[:80]} unreachable: {exc!r}") from exc
