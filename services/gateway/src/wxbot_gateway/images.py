"""Image in: an image message's picture is fetched, made vision-ready and stored before the event is published.

Why here, on the callback's path, like voice (voice.py): the gateway alone holds what fetching
needs (the WeCom and Official Account tokens, the AI bot's AES key, the bridge's frame), and an
event published with its image already stored needs no new stage, retry loop or second event.
Exactly-once is the callback's own guarantee: nothing is acknowledged before the publish, a
retry carries the same event id, and a retry of a message already published is not fetched
again. The price is the callback waiting for the fetch, bounded by `IMAGE_DEADLINE_S` (under
WeCom's 5 s). What is stored is the image the model will see (`to_vision_image`: JPEG/PNG, long
side ≤ 1536, a GIF's first frame, HEIC converted), so the drafting stage only reads and encodes
it. Any failure leaves the reason in `wxbot.image` and the user gets one notice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxbot_common.errors import TransientError
from wxbot_common.http_client import TracedHttp
from wxbot_common.logs import get_logger
from wxbot_common.media.download import DownloadError, download
from wxbot_common.media.errors import MediaError as ConversionError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.image import to_vision_image
from wxbot_common.media.store import MediaError as StoreError
from wxbot_common.media.store import MediaStore
from wxbot_common.media.vision import IMAGE_OK, IMAGE_STATUS
from wxbot_gateway.errors import DeliveryRefusedError, RetryLaterError
from wxbot_gateway.wecom_api import MediaTooLargeError, WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.errors import WeComProtocolError

Fetch = Callable[[int], Awaitable[bytes]]
"""Fetches one image's bytes, at most the given number (else a too-large error)."""


class ImageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "wxbot_gateway_image",
            "Image messages by outcome (ok, download, too_large, not_image, unsupported, corrupt, empty, store, "
            "timeout, error)",
            ["outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "wxbot_gateway_image_step_seconds",
            "Time of each image step (download, convert, store)",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
            registry=registry,
        )


class _ImageFailedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ImageIntake:
    """`fill(event, fetch)`: the stored image's reference and `wxbot.image` put into a MessageReceived."""

    def __init__(
        self,
        http: TracedHttp,
        store: MediaStore,
        ffmpeg: Ffmpeg,
        metrics: ImageMetrics,
        *,
        deadline_s: float,
        max_bytes: int,
        allow_private: bool = False,
    ) -> None:
        self._http = http
        self._store = store
        self._ffmpeg = ffmpeg
        self._allow_private = allow_private  # URLs from messages are untrusted: public addresses only
        self._metrics = metrics
        self._deadline_s = deadline_s
        self.max_bytes = max_bytes
        self._tracer = trace.get_tracer("wxbot.gateway.image")
        self._log = get_logger("wxbot.gateway.image")

    @staticmethod
    def wanted(event: ev.MessageReceived) -> bool:
        return event.kind == ev.MESSAGE_KIND_IMAGE and IMAGE_STATUS not in event.attributes

    async def fill(self, event: ev.MessageReceived, fetch: Fetch) -> None:
        """Never raises: on failure the event says why (`wxbot.image`) and carries no image."""
        with self._tracer.start_as_current_span("image.fetch") as span:
            try:
                async with asyncio.timeout(self._deadline_s):
                    await self._fetch_and_store(event, fetch)
            except TimeoutError:
                outcome = "timeout"
                self._log.warning("image_failed", reason=outcome, deadline_s=self._deadline_s)
            except _ImageFailedError as exc:
                outcome = exc.reason
                self._log.warning("image_failed", reason=outcome, error=str(exc))
            except Exception as exc:  # a bug or an unforeseen library error: still one notice, not a 500 loop
                outcome = "error"
                self._log.exception("image_failed", reason=outcome, error=repr(exc))
            else:
                outcome = IMAGE_OK
            if outcome != IMAGE_OK:
                event.ClearField("media")
            event.attributes[IMAGE_STATUS] = outcome
            span.set_attribute("wxbot.image.outcome", outcome)
            self._metrics.outcomes.labels(outcome).inc()

    def _step(self, name: str, started: float) -> None:
        self._metrics.seconds.labels(name).observe(time.perf_counter() - started)

    async def _fetch_and_store(self, event: ev.MessageReceived, fetch: Fetch) -> None:
        started = time.perf_counter()
        try:
            data = await fetch(self.max_bytes)
        except MediaTooLargeError as exc:
            raise _ImageFailedError("too_large", str(exc)) from exc
        except ConversionError as exc:  # the download helper's: too_large, download
            raise _ImageFailedError(exc.reason, str(exc)) from exc
        except (TransientError, RetryLaterError, DeliveryRefusedError) as exc:
            raise _ImageFailedError("download", f"media/get failed: {exc}") from exc
        except WeComProtocolError as exc:  # the AI bot's file did not decrypt
            raise _ImageFailedError("corrupt", f"encrypted image: {exc}") from exc
        self._step("download", started)
        started = time.perf_counter()
        try:
            image = await to_vision_image(self._ffmpeg, data, max_input_bytes=self.max_bytes)
        except ConversionError as exc:
            raise _ImageFailedError(exc.reason, str(exc)) from exc
        self._step("convert", started)
        started = time.perf_counter()
        try:
            ref = await self._store.put(image.data, image.mime)
        except StoreError as exc:
            raise _ImageFailedError("store", str(exc)) from exc
        event.media.CopyFrom(ref.to_proto())
        self._step("store", started)

    # -- where the bytes come from, per channel --------------------------------------------------------

    def from_media(self, client: WeComClient, media_id: str, pic_url: str) -> Fetch:
        """WeCom app / Official Account: `media/get` by MediaId; the `PicUrl` when that fails."""

        async def fetch(limit: int) -> bytes:
            if media_id:
                try:
                    return (await client.get_media(media_id, limit)).data
                except (TransientError, RetryLaterError, DeliveryRefusedError) as exc:
                    if not pic_url:
                        raise
                    self._log.info("image_media_get_failed_trying_pic_url", error=str(exc))
            if not pic_url:
                raise DownloadError("image message without MediaId or PicUrl")
            return (await download(self._http, pic_url, limit, allow_private=self._allow_private)).data

        return fetch

    def from_url(self, url: str, crypto: CallbackCrypto | None = None) -> Fetch:
        """A plain image URL (a bridge frame), or with `crypto` the AI bot's encrypted file."""

        async def fetch(limit: int) -> bytes:
            # AES-CBC adds at most one 32-byte block of padding to the file.
            size = limit + 32 if crypto else limit
            data = (await download(self._http, url, size, allow_private=self._allow_private)).data
            return crypto.decrypt_media(data) if crypto is not None else data

        return fetch

    @staticmethod
    def from_bytes(data: bytes) -> Fetch:
        """An image that came inline (a bridge frame's base64)."""

        async def fetch(limit: int) -> bytes:
            if len(data) > limit:
                raise MediaTooLargeError(len(data), limit)
            return data

        return fetch
