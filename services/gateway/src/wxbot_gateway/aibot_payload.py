"""The decrypted JSON of a WeCom AI-bot callback, checked field by field (pure).

The payload is signed by WeCom, but a wrong shape (a string where an object belongs, deep nesting,
a lone surrogate in a string) must still be a 400, never an AttributeError, RecursionError or
UnicodeEncodeError that becomes a 500 and a retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wxbot_gateway.untrusted_json import UntrustedJsonError, encodable, load
from wxbot_wecom.errors import MessageFormatError

MAX_ID_CHARS = 256
MAX_URL_CHARS = 4096


@dataclass(frozen=True, slots=True)
class AibotCallback:
    kind: str  # msgtype: text, voice, mixed, image, file, video, event, stream (a refresh poll)
    msgid: str
    bot: str  # aibotid
    user: str  # from.userid
    chat: str  # chatid in group chats, else ""
    text: str  # what the user said, or "[image]"-style descriptions
    stream_id: str  # the stream a refresh poll asks about
    event: str  # event.eventtype of an event
    image_url: str = ""  # the encrypted image of an `image` message, or the first image of a `mixed` one


def _object(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageFormatError(f'"{key}" must be an object', code="bad_field")
    return value


def _string(obj: dict[str, Any], key: str, limit: int | None = MAX_ID_CHARS) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageFormatError(f'"{key}" must be a string', code="bad_field")
    text = str(value)
    if limit is not None and len(text) > limit:
        raise MessageFormatError(f'"{key}" is longer than {limit} characters', code="bad_field")
    if not encodable(text):
        raise MessageFormatError(f'"{key}" holds a lone surrogate (\\ud800-style escape)', code="bad_encoding")
    return text


def _text_of(payload: dict[str, Any], kind: str) -> str:
    """Text and voice (already transcribed) as sent; `mixed` as its text items; media as `[kind]`."""
    if kind in ("text", "voice"):
        return _string(_object(payload, kind), "content", limit=None)
    if kind == "mixed":
        items = _object(payload, "mixed").get("msg_item") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise MessageFormatError('"mixed.msg_item" must be a list of objects', code="bad_field")
        texts = (_string(_object(i, "text"), "content", limit=None) for i in items if i.get("msgtype") == "text")
        return " ".join(t for t in texts if t)
    return f"[{kind}]"


def _image_url_of(payload: dict[str, Any], kind: str) -> str:
    """`image.url`, or the first image item's in a `mixed` message (the file behind it is encrypted)."""
    if kind == "image":
        return _string(_object(payload, "image"), "url", limit=MAX_URL_CHARS)
    if kind == "mixed":
        items = _object(payload, "mixed").get("msg_item") or []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("msgtype") == "image":
                return _string(_object(item, "image"), "url", limit=MAX_URL_CHARS)
    return ""


def parse_callback(plain: bytes) -> AibotCallback:
    """Parse and check a decrypted callback; MessageFormatError (→ 400) says what is wrong."""
    try:
        payload = load(plain)
    except UntrustedJsonError as exc:
        raise MessageFormatError("payload is not UTF-8 JSON", code="malformed_json") from exc
    if not isinstance(payload, dict):
        raise MessageFormatError("payload is not a JSON object", code="malformed_json")
    kind = _string(payload, "msgtype", limit=32)
    if not kind:
        raise MessageFormatError('missing "msgtype"', code="missing_field")
    if kind == "stream":
        sid = _string(_object(payload, "stream"), "id")
        if not sid:
            raise MessageFormatError('a refresh needs "stream.id"', code="missing_field")
        return AibotCallback(kind, _string(payload, "msgid"), _string(payload, "aibotid"), "", "", "", sid, "")
    msgid, user = _string(payload, "msgid"), _string(_object(payload, "from"), "userid")
    if not msgid or not user:
        raise MessageFormatError('a message needs "msgid" and "from.userid"', code="missing_field")
    chat = _string(payload, "chatid") if payload.get("chattype") == "group" else ""
    event = _string(_object(payload, "event"), "eventtype") if kind == "event" else ""
    text = "" if kind == "event" else _text_of(payload, kind)
    image_url = "" if kind == "event" else _image_url_of(payload, kind)
    return AibotCallback(kind, msgid, _string(payload, "aibotid"), user, chat, text, "", event, image_url)
