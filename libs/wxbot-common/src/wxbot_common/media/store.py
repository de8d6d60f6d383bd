"""The media blob store: voice and image files in the NATS JetStream object store, so events carry
a `MediaRef` (name, size, content type, sha256) and never the bytes.

The bucket (`WXBOT_MEDIA`) is created by the topology like the streams; files expire after its TTL
(`MEDIA_TTL_S`, three days like WeCom's media ids). Names are content digests by default, so a
redelivered handler that stores the same file again gets the same reference.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import BucketNotFoundError, DigestMismatchError, NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from wxbot_common.nats.subjects import MEDIA_BUCKET
from wxbot_proto.events.v1 import events_pb2 as ev

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_READ_TIMEOUT_S = 30.0
CONTENT_TYPE = "Content-Type"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class MediaError(Exception):
    """A media file could not be stored or read; the message says which and why."""


class MediaTooLargeError(MediaError):
    def __init__(self, size: int, limit: int, name: str = "") -> None:
        what = f"media {name!r}" if name else "media"
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes (MEDIA_MAX_BYTES)")
        self.size, self.limit = size, limit


class MediaNotFoundError(MediaError):
    def __init__(self, name: str) -> None:
        super().__init__(f"media {name!r} not found: never stored, or expired (MEDIA_TTL_S)")
        self.name = name


class MediaCorruptError(MediaError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"media {name!r} is corrupt: {detail}")
        self.name = name


@dataclass(frozen=True, slots=True)
class MediaRef:
    """What an event carries instead of a file."""

    name: str
    size: int
    content_type: str
    sha256: str  # hex

    def to_proto(self) -> ev.MediaRef:
        return ev.MediaRef(name=self.name, size=self.size, content_type=self.content_type, sha256=self.sha256)

    @classmethod
    def from_proto(cls, ref: ev.MediaRef) -> MediaRef:
        return cls(ref.name, ref.size, ref.content_type, ref.sha256)


def _hex_of_nats_digest(digest: str | None) -> str:
    """nats object-store digests read `SHA-256=<base64url>`; ours are hex."""
    if not digest or "=" not in digest:
        return ""
    encoded = digest.split("=", 1)[1]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    except ValueError:
        return ""


def _content_type_of(info: ObjectInfo) -> str:
    """Headers are Go's `nats.Header` (a list per key) when written by our `put` or the nats CLI."""
    value = (info.headers or {}).get(CONTENT_TYPE)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else DEFAULT_CONTENT_TYPE


class MediaStore:
    """Put and get media files by name, within a size limit."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        bucket: str = MEDIA_BUCKET,
        max_bytes: int = DEFAULT_MAX_BYTES,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self._store: ObjectStore | None = None

    async def _bound(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._js.object_store(self.bucket)
            except BucketNotFoundError as exc:
                raise MediaError(
                    f"media bucket {self.bucket!r} does not exist: run `python -m wxbot_common.nats.topology ensure`"
                ) from exc
        return self._store

    async def put(self, data: bytes, content_type: str, name: str | None = None) -> MediaRef:
        """Store `data`; `name` defaults to `sha256-<hex>` (the same file, the same reference).
        Storing under an existing name replaces the file and restarts its TTL."""
        if len(data) > self.max_bytes:
            raise MediaTooLargeError(len(data), self.max_bytes, name or "")
        digest = hashlib.sha256(data).hexdigest()
        name = name or f"sha256-{digest}"
        store = await self._bound()
        meta = ObjectMeta(name=name, headers={CONTENT_TYPE: [content_type or DEFAULT_CONTENT_TYPE]})
        await store.put(name, data, meta=meta)
        return MediaRef(name, len(data), content_type or DEFAULT_CONTENT_TYPE, digest)

    async def info(self, name: str) -> MediaRef:
        """The reference of a stored file, without reading it."""
        store = await self._bound()
        try:
            info = await store.get_info(name)
        except NotFoundError as exc:
            raise MediaNotFoundError(name) from exc
        return MediaRef(name, info.size or 0, _content_type_of(info), _hex_of_nats_digest(info.digest))

    async def get(self, ref: MediaRef | str) -> bytes:
        """The bytes of a file; given a `MediaRef`, they must match its size and digest."""
        name = ref if isinstance(ref, str) else ref.name
        store = await self._bound()
        try:
            info = await store.get_info(name)
        except NotFoundError as exc:
            raise MediaNotFoundError(name) from exc
        size = info.size or 0
        if size > self.max_bytes:
            raise MediaTooLargeError(size, self.max_bytes, name)
        if not isinstance(ref, str) and size != ref.size:  # replaced under the same name: do not download
            raise MediaCorruptError(name, f"{size} bytes in the store, the reference says {ref.size}")
        if size and not await self._chunks_present(info):
            # The chunks were written before the meta, so they expire first.
            raise MediaNotFoundError(name)
        try:
            result = await asyncio.wait_for(store.get(name), self.read_timeout_s)
        except NotFoundError as exc:
            raise MediaNotFoundError(name) from exc
        except DigestMismatchError as exc:
            raise MediaCorruptError(name, "digest mismatch in the store") from exc
        except TimeoutError as exc:  # chunks vanished while reading (expired meanwhile)
            raise MediaNotFoundError(name) from exc
        data = bytes(result.data or b"")
        if not isinstance(ref, str) and ref.sha256 and hashlib.sha256(data).hexdigest() != ref.sha256:
            raise MediaCorruptError(name, "sha256 differs from the reference (replaced under the same name?)")
        return data

    async def _chunks_present(self, info: ObjectInfo) -> bool:
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
        try:
            await self._js.get_last_msg(OBJ_STREAM_TEMPLATE.format(bucket=self.bucket), subject)
        except NotFoundError:
            return False
        return True

    async def delete(self, name: str) -> None:
        """Remove a file now (nothing happens if it is gone already)."""
        store = await self._bound()
        try:
            await store.delete(name)
        except NotFoundError:
            return
