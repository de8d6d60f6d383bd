"""Image generation over an OpenAI-compatible `/images/generations` endpoint (`IMAGE_MODEL`).

The answer's image comes as `b64_json` (gpt-image models, and DALL·E when asked) or as a `url`
(DALL·E's default, many compatible servers): both are taken. A URL is downloaded within
`max_bytes` (refused by its Content-Length first, then counted) and sniffed, so a URL answering
an HTML page or a JSON error is an error, never an "image". Every failure is an
`ImageGenerationError` whose `reason` (`unavailable`, `rejected`, `not_image`, `too_large`) a
service maps to one apology; the caller bounds the time (a slow endpoint is cancelled).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.media.download import DownloadError, download
from wxbot_common.media.errors import MediaError, MediaTooLargeError
from wxbot_common.media.settings import MediaEndpoint
from wxbot_common.media.sniff import sniff_image

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


class ImageGenerationError(Exception):
    """No image came back; `reason` is a stable short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ImageGenerator:
    """`generate(prompt)` → the image's bytes (sniffed as an image), from the configured endpoint."""

    def __init__(
        self, http: TracedHttp, endpoint: MediaEndpoint, size: str = "1024x1024", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._size = size
        self._max_bytes = max_bytes

    @property
    def model(self) -> str:
        return self._endpoint.model

    async def generate(self, prompt: str) -> bytes:
        body = {"model": self._endpoint.model, "prompt": prompt, "n": 1, "size": self._size}
        headers = {"Authorization": f"Bearer {self._endpoint.api_key}"} if self._endpoint.api_key else {}
        try:
            async with self._http.request(
                "POST", self._endpoint.url("images/generations"), json=body, headers=headers
            ) as resp:
                status, raw = resp.status, await resp.read()
        except HttpError as exc:
            raise ImageGenerationError("unavailable", f"image endpoint unreachable: {exc!r}") from exc
        if status >= 500 or status == 429:
            raise ImageGenerationError("unavailable", f"image endpoint answered HTTP {status}")
        if status != 200:
            raise ImageGenerationError("rejected", f"image endpoint answered HTTP {status}: {raw[:200]!r}")
        item = _first_item(raw)
        if isinstance(item.get("b64_json"), str):
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ImageGenerationError("not_image", "b64_json does not decode") from exc
        elif isinstance(item.get("url"), str) and item["url"].startswith(("http://", "https://")):
            data = await self._download(item["url"])
        else:
            raise ImageGenerationError("unavailable", "the answer holds neither b64_json nor an http(s) url")
        if len(data) > self._max_bytes:
            raise ImageGenerationError("too_large", f"{len(data)} bytes, limit {self._max_bytes}")
        try:
            sniff_image(data)
        except MediaError as exc:
            raise ImageGenerationError("not_image", str(exc)) from exc
        return data

    async def _download(self, url: str) -> bytes:
        # The result URL comes from the operator's own endpoint (maybe a model server on the LAN): trusted.
        try:
            return (await download(self._http, url, self._max_bytes, allow_private=True)).data
        except MediaTooLargeError as exc:
            raise ImageGenerationError("too_large", f"image url: {exc}") from exc
        except DownloadError as exc:
            raise ImageGenerationError("unavailable", f"image url: {exc}") from exc


def _first_item(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw).get("data")
    except (ValueError, AttributeError) as exc:
        raise ImageGenerationError("unavailable", "image answer is not a JSON object") from exc
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ImageGenerationError("unavailable", "image answer has no data[0]")
    return data[0]
