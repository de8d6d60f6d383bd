"""Temporary media of the fake WeCom and Official Account APIs: `media/upload` checks, storage with
WeCom's three-day expiry, and what `media/get` serves.

The limits are the current documents' (wecom-media-oauth-cards.md §1.1; OA `media/upload`): WeCom
image 10 MB JPG/PNG, voice 2 MB AMR ≤ 60 s, video 10 MB MP4, file 20 MB, every file over 5 bytes;
OA image 10 MB (bmp/png/jpeg/gif), voice 2 MB AMR/MP3 ≤ 60 s, video 10 MB MP4, thumb 64 KB JPG.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from wxbot_devkit.fakes.media_files import MIME_TYPES, amr_duration_s, sniff

MB = 1024 * 1024
MEDIA_TTL_S = 3 * 86400.0
MAX_VOICE_S = 60.0


@dataclass(frozen=True, slots=True)
class UploadRule:
    limit: int  # bytes
    formats: frozenset[str] | None  # sniffed formats accepted (None: anything)
    size_errcode: int


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """How one API judges an upload; errcodes per failure."""

    rules: Mapping[str, UploadRule]
    bad_type_errcode: int  # `type` not one of the rules
    no_media_errcode: int  # no `media` file part, or an empty one
    format_errcode: int  # the bytes are not a format the type takes
    too_long_errcode: int  # voice over 60 s
    min_bytes: int = 6


WECOM_UPLOADS = UploadPolicy(
    MappingProxyType(
        {
            "image": UploadRule(10 * MB, frozenset({"png", "jpeg"}), 40009),
            "voice": UploadRule(2 * MB, frozenset({"amr"}), 40006),
            "video": UploadRule(10 * MB, frozenset({"mp4"}), 40011),
            "file": UploadRule(20 * MB, None, 40006),
        }
    ),
    bad_type_errcode=40005,
    no_media_errcode=44001,
    format_errcode=40004,
    too_long_errcode=45007,
)

OA_UPLOADS = UploadPolicy(
    MappingProxyType(
        {
            "image": UploadRule(10 * MB, frozenset({"png", "jpeg", "gif", "bmp"}), 40009),
            "voice": UploadRule(2 * MB, frozenset({"amr", "mp3"}), 40006),
            "video": UploadRule(10 * MB, frozenset({"mp4"}), 40006),
            "thumb": UploadRule(64 * 1024, frozenset({"jpeg"}), 40006),
        }
    ),
    bad_type_errcode=40004,
    no_media_errcode=41005,
    format_errcode=40005,
    too_long_errcode=45007,
)


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A media id and its file; `uploaded` is False for media a test pre-loaded."""

    media_id: str
    media_type: str  # image | voice | video | file | thumb
    data: bytes
    content_type: str
    filename: str
    created_at: float  # time.time()
    uploaded: bool = False
    expired: bool = field(default=False, compare=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def summary(self) -> dict[str, object]:
        return {
            "media_id": self.media_id,
            "type": self.media_type,
            "size": len(self.data),
            "content_type": self.content_type,
            "filename": self.filename,
            "created_at": self.created_at,
            "sha256": self.sha256,
        }


def media_type_of(content_type: str) -> str:
    if content_type.startswith("image/"):
        return "image"
    if content_type.startswith("audio/"):
        return "voice"
    if content_type.startswith("video/"):
        return "video"
    return "file"


def new_media_id() -> str:
    """Shaped like WeCom's: 44 URL-safe characters starting with a digit."""
    return "3" + secrets.token_urlsafe(33)[:43]


class MediaLibrary:
    """Thread-safe: the fake may serve on another thread than the test."""

    def __init__(self, policy: UploadPolicy, ttl_s: float = MEDIA_TTL_S) -> None:
        self.policy = policy
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._media: dict[str, StoredMedia] = {}
        self._uploads: list[StoredMedia] = []
        self.clock_offset_s = 0.0  # `advance`: the fake's clock runs ahead of the wall clock

    def now(self) -> float:
        """The fake's time (`time.time()` plus every `advance`)."""
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward: `advance(3 * 86400)` and every media id so far has expired."""
        with self._lock:
            self.clock_offset_s += seconds

    def add(
        self,
        media_id: str,
        data: bytes,
        content_type: str = "image/jpeg",
        filename: str | None = None,
        media_type: str | None = None,
    ) -> StoredMedia:
        """Pre-load a file under `media_id` (no checks: tests may serve anything, even garbage)."""
        extension = next((k for k, v in MIME_TYPES.items() if v == content_type), "bin")
        stored = StoredMedia(
            media_id,
            media_type or media_type_of(content_type),
            data,
            content_type,
            filename or f"{media_id}.{'jpg' if extension == 'jpeg' else extension}",
            self.now(),
        )
        with self._lock:
            self._media[media_id] = stored
        return stored

    def check(self, media_type: str, data: bytes) -> int:
        """The errcode the real API answers for this upload (0 = accepted)."""
        rule = self.policy.rules.get(media_type)
        if rule is None:
            return self.policy.bad_type_errcode
        if not data:
            return self.policy.no_media_errcode
        if len(data) < self.policy.min_bytes:
            return 40006
        if len(data) > rule.limit:
            return rule.size_errcode
        kind = sniff(data)
        if rule.formats is not None and kind not in rule.formats:
            return self.policy.format_errcode
        if kind == "amr":
            duration = amr_duration_s(data)
            if duration is None:
                return self.policy.format_errcode
            if duration > MAX_VOICE_S:
                return self.policy.too_long_errcode
        return 0

    def upload(self, media_type: str, data: bytes, filename: str) -> StoredMedia:
        """Store an upload that passed `check`."""
        kind = sniff(data)
        content_type = MIME_TYPES[kind] if kind else "application/octet-stream"
        stored = StoredMedia(new_media_id(), media_type, data, content_type, filename, self.now(), uploaded=True)
        with self._lock:
            self._media[stored.media_id] = stored
            self._uploads.append(stored)
        return stored

    def get(self, media_id: str, media_type: str | None = None) -> StoredMedia | None:
        """The file behind a media id; None when unknown, expired, or (given) of another type."""
        with self._lock:
            stored = self._media.get(media_id)
        if stored is None or stored.expired or self.now() - stored.created_at > self.ttl_s:
            return None
        if media_type is not None and stored.media_type != media_type:
            return None
        return stored

    def expire(self, *media_ids: str) -> None:
        """These media ids (all when none are given) now answer 40007, as after three days."""
        with self._lock:
            for media_id in media_ids or tuple(self._media):
                if (stored := self._media.get(media_id)) is not None:
                    self._media[media_id] = replace(stored, expired=True)

    @property
    def uploads(self) -> list[StoredMedia]:
        with self._lock:
            return list(self._uploads)

    def forget_uploads(self) -> None:
        """Clear the record of uploads (their media ids stay valid)."""
        with self._lock:
            self._uploads.clear()
