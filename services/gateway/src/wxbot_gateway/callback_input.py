"""The checks every callback POST passes before anything looks inside it: media type, body, timestamp.

They are the same for the WeCom app, the Official Account and the AI bot, and each failure is a
4xx with a short reason (also the metric label): nothing reaches the crypto or the parsers.
"""

from __future__ import annotations

import time

from wxbot_common.fast_http import BodyError, RawRequest
from wxbot_gateway.settings import GatewaySettings

# Some proxies drop the header, and text/plain is what a few relays send: anything else is refused.
XML_TYPES = frozenset({"", "text/xml", "application/xml", "text/plain"})
JSON_TYPES = frozenset({"", "application/json", "text/json", "text/plain"})
MAX_TIMESTAMP_DIGITS = 12  # seconds since 1970 have 10 digits until the year 2286


class RefusedError(Exception):
    """A request answered `status` with `reason` before it was looked at."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def media_type_accepted(header: str, accepted: frozenset[str]) -> bool:
    return header.split(";", 1)[0].strip().lower() in accepted


def check_timestamp(timestamp: str, window_s: int, now: float | None = None) -> None:
    """400 `bad_timestamp` unless `timestamp` is a number of seconds; 403 `stale_timestamp` when it is
    further than `window_s` from now (replays; `0` turns the window off)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise RefusedError(400, "bad_timestamp")
    if window_s and abs((time.time() if now is None else now) - int(timestamp)) > window_s:
        raise RefusedError(403, "stale_timestamp")


async def checked_body(request: RawRequest, accepted: frozenset[str], settings: GatewaySettings) -> bytes:
    """The body of a callback POST whose media type, size, arrival and timestamp pass, else `RefusedError`."""
    if not media_type_accepted(request.headers.get("content-type", ""), accepted):
        raise RefusedError(415, "unsupported_media_type")
    try:
        body = await request.body(settings.gateway_max_body_bytes, settings.gateway_body_timeout_s)
    except BodyError as exc:
        raise RefusedError(exc.status, exc.reason) from exc
    check_timestamp(request.query.get("timestamp", ""), settings.wecom_timestamp_window_s)
    return body
