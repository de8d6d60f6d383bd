"""Images and voice of a reply, out: the media store's file → `media/upload` → an image or voice
message (WeCom app: `message/send`; Official Account: its own upload and customer-service message).

A reply's parts are its text parts, then its media in order (`reply_parts`); delivery claims and
records each part once, a media part like a text part, so a redelivered reply never sends an image
twice. The upload is not repeated either: the media id is kept in Redis per app and file digest for
`reuse_s` (2.5 days, inside WeCom's three), so a send that failed after its upload, or the same
image sent again, reuses it; a media id WeCom no longer knows (40007) is dropped and the file
uploaded once more.

What cannot be sent is skipped with a log line and a metric, never retried forever and never a
second reply: a file gone from the store (expired), a channel without media messages (the AI bot,
the bridge: they get the text; an image-only reply gets `NO_MEDIA_NOTICE`), an upload or send
WeCom refuses for its content (40004/40006/40009…). A reply that was an image alone gets
`MEDIA_FAILED_NOTICE` in its place (delivery sends it under the image's claim: still one reply).
Uploads that fail for now (busy, rate limits, unreachable) raise as text sends do and are retried
per `errcodes`.
"""

from __future__ import annotations

from typing import NoReturn, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.media.store import MediaError, MediaNotFoundError, MediaStore
from wxbot_common.media.store import MediaRef as StoredRef
from wxbot_gateway.errcodes import Outcome, classify
from wxbot_gateway.errors import DeliveryRefusedError
from wxbot_gateway.senders import ReplySender
from wxbot_proto.events.v1 import events_pb2 as ev

INVALID_MEDIA_ID = 40007
REUSE_S = int(2.5 * 86400)
MEDIA_FAILED_NOTICE = "抱歉，图片或语音没能发送。(Sorry, the image or voice message could not be sent.)"
NO_MEDIA_NOTICE = "（图片或语音无法在此渠道发送。）(Images and voice cannot be sent on this channel.)"
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "audio/amr": "amr"}

Part = str | ev.MediaRef


@runtime_checkable
class MediaChannel(Protocol):
    """A ReplySender that can send images and voice."""

    name: str

    @property
    def media_scope(self) -> str: ...

    async def upload_media(self, media_type: str, data: bytes, filename: str, content_type: str) -> str: ...

    async def send_media(self, address: ev.ReplyAddress, msgtype: str, media_id: str) -> str: ...


class MediaSkippedError(Exception):
    """This media part cannot be sent (for good): delivery records it as done and goes on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def media_kind(ref: ev.MediaRef) -> str | None:
    """The WeCom message type of a stored file: image (JPEG/PNG) or voice (AMR)."""
    if ref.content_type in ("image/jpeg", "image/png"):
        return "image"
    if ref.content_type == "audio/amr":
        return "voice"
    return None


def reply_parts(sender: ReplySender, text: str, media: list[ev.MediaRef]) -> list[Part]:
    """The text's parts, then each media file; a channel without media messages gets the text
    (and a notice when there is no text)."""
    parts: list[Part] = list(sender.split(text)) if text else []
    if not media:  # the usual reply: no runtime Protocol check (a walk over its members)
        return parts
    if isinstance(sender, MediaChannel):
        parts.extend(media)
    elif not parts:
        parts.append(NO_MEDIA_NOTICE)
    return parts


class MediaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.parts = Counter(
            "wxbot_gateway_media_out",
            "Image and voice parts of replies, by channel, kind and outcome (uploaded, reused, reuploaded, "
            "expired, refused, unsupported)",
            ["channel", "kind", "outcome"],
            registry=registry,
        )


class MediaSender:
    def __init__(self, store: MediaStore, redis: Redis, metrics: MediaMetrics, reuse_s: int = REUSE_S) -> None:
        self._store = store
        self._redis = redis
        self._metrics = metrics
        self._reuse_s = reuse_s
        self._log = get_logger("wxbot.gateway.media")

    async def send(self, sender: ReplySender, address: ev.ReplyAddress, ref: ev.MediaRef) -> str:
        """Send one media part; its msgid. MediaSkippedError when it cannot be sent at all."""
        kind = media_kind(ref)
        if not isinstance(sender, MediaChannel) or kind is None:
            self._skipped(sender.name, kind or "file", "unsupported", ref, address)
        try:
            return await self._send(sender, address, ref, kind)
        except DeliveryRefusedError as exc:
            if classify(_api(sender), exc.errcode).outcome is not Outcome.CONTENT:
                raise  # configuration or recipient: the whole reply fails, as for text
            self._skipped(sender.name, kind, "refused", ref, address, str(exc))

    async def _send(self, sender: MediaChannel, address: ev.ReplyAddress, ref: ev.MediaRef, kind: str) -> str:
        key = f"wxbot:gateway:media:{sender.media_scope}:{kind}:{ref.sha256}"
        cached = await self._redis.get(key)
        if cached:
            media_id = cached.decode() if isinstance(cached, bytes) else str(cached)
            try:
                msgid = await sender.send_media(address, kind, media_id)
            except DeliveryRefusedError as exc:
                if exc.errcode != INVALID_MEDIA_ID:
                    raise
                await self._redis.delete(key)  # expired at WeCom (or never valid there): upload again
                outcome = "reuploaded"
            else:
                self._metrics.parts.labels(sender.name, kind, "reused").inc()
                return msgid
        else:
            outcome = "uploaded"
        data = await self._read(sender, ref, kind, address)
        filename = f"{kind}.{_EXTENSIONS.get(ref.content_type, 'bin')}"
        media_id = await sender.upload_media(kind, data, filename, ref.content_type)
        await self._redis.set(key, media_id, ex=self._reuse_s)
        msgid = await sender.send_media(address, kind, media_id)
        self._metrics.parts.labels(sender.name, kind, outcome).inc()
        return msgid

    async def _read(self, sender: MediaChannel, ref: ev.MediaRef, kind: str, address: ev.ReplyAddress) -> bytes:
        try:
            return await self._store.get(StoredRef.from_proto(ref))
        except MediaNotFoundError as exc:  # past MEDIA_TTL_S: nothing to send, ever
            self._skipped(sender.name, kind, "expired", ref, address, str(exc))
        except MediaError as exc:  # NATS away, a read timing out: try again later
            raise TransientError(f"media store: {exc}") from exc

    def _skipped(
        self, channel: str, kind: str, reason: str, ref: ev.MediaRef, address: ev.ReplyAddress, detail: str = ""
    ) -> NoReturn:
        self._metrics.parts.labels(channel, kind, reason).inc()
        self._log.warning(
            "media_part_skipped", reason=reason, media=ref.name, detail=detail[:300], user=user_hash(address.user_id)
        )
        raise MediaSkippedError(reason, detail or ref.name)


def _api(sender: MediaChannel) -> str:
    """The errcode table of a sender ("wecom" or "wechat")."""
    return "wechat" if sender.name == "wechat" else "wecom"
