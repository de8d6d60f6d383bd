"""Typed media errors: each carries a short `reason` a service maps to one plain notice.

They are deliberately not `PermanentError`/`TransientError`: whether bad media ends a message or is
retried is the service's choice (a corrupt voice note is answered with a notice, never retried).
"""

from __future__ import annotations

from typing import ClassVar


class MediaError(Exception):
    """Media could not be processed; `reason` is a stable short code, the message a short detail."""

    reason: ClassVar[str] = "media"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyMediaError(MediaError):
    """Zero bytes, or a file that decodes to nothing (no audio samples, no video frame)."""

    reason = "empty"


class CorruptMediaError(MediaError):
    """The bytes claim a format but do not decode (ffmpeg failed, broken frame headers)."""

    reason = "corrupt"


class UnsupportedMediaError(MediaError):
    """A real format we do not handle (SILK voice, an image ffmpeg cannot decode, a missing encoder)."""

    reason = "unsupported"


class NotAnImageError(UnsupportedMediaError):
    """An image URL answered with HTML, JSON or other text (a login page, an API error)."""

    reason = "not_image"


class MediaTooLargeError(MediaError):
    """Over a byte, pixel or duration limit: checked before decoding where possible."""

    reason = "too_large"


class MediaTimeoutError(MediaError):
    """ffmpeg did not finish within its time limit and was killed."""

    reason = "timeout"


class FfmpegUnavailableError(MediaError):
    """Neither a system ffmpeg nor the `imageio-ffmpeg` wheel's binary was found."""

    reason = "no_ffmpeg"
