"""Callback XML/JSON: parse the (untrusted) envelope and decrypted message, build replies and fake inbound messages.

Parsing goes through defusedxml with DTDs and entities forbidden, after a strict UTF-8 decode and a size cap,
so hostile bodies (billion laughs, external entities, odd encodings) fail fast as `MessageFormatError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import cast
from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as SafeET  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]

from wxbot_wecom.errors import MessageFormatError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ELEMENTS",
    "Envelope",
    "InboundMessage",
    "ReplyEnvelope",
    "build_envelope_xml",
    "build_inner_event_xml",
    "build_inner_text_xml",
    "build_reply_envelope_xml",
    "build_text_reply_xml",
    "cdata",
    "dedup_key",
    "parse_envelope",
    "parse_inbound",
    "parse_json_envelope",
    "parse_reply_envelope",
]

MAX_BODY_BYTES = 1 << 20
"""Real callbacks are a few KiB; anything near this is abuse."""
MAX_ELEMENTS = 1000
"""The richest event (SendPicsInfo) has a few dozen elements."""

_MAX_INT_DIGITS = 20
# Characters XML 1.0 cannot carry at all (not even in CDATA): WeCom would reject the whole reply.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TYPED_FIELDS = frozenset(
    {
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "MsgId",
        "AgentID",
        "Content",
        "MediaId",
        "Event",
        "EventKey",
    }
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The outer POST body. Only `encrypt` is trusted (after the signature); the rest is routing hints."""

    to_user_name: str
    agent_id: str | None
    encrypt: str


@dataclass(frozen=True, slots=True)
class ReplyEnvelope:
    """An encrypted passive reply as WeCom receives it (used by fakes/tests to open gateway replies)."""

    encrypt: str
    msg_signature: str
    timestamp: str
    nonce: str


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A decrypted message or event. Ids stay strings (MsgId exceeds 2^53); `event` is lower-cased."""

    to_user_name: str
    from_user_name: str
    create_time: int
    msg_type: str
    msg_id: str | None = None
    agent_id: str | None = None
    content: str | None = None
    media_id: str | None = None
    event: str | None = None
    event_key: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    """Every other leaf element, keyed by its path below the root (e.g. `ScanCodeInfo/ScanResult`)."""


# -- parsing -----------------------------------------------------------------------------------------------------


def _to_text(data: bytes | str) -> str:
    if len(data) > MAX_BODY_BYTES:
        raise MessageFormatError(f"body of {len(data)} bytes/characters exceeds the cap", code="too_large")
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageFormatError("body is not valid UTF-8", code="bad_encoding") from exc
    if not text.strip():
        raise MessageFormatError("empty body", code="empty")
    return text


def _parse_root(data: bytes | str) -> Element:
    """Parse one `<xml>` document; a str is parsed as text, so an encoding declaration cannot re-interpret it."""
    text = _to_text(data)
    try:
        root = cast(Element, SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True))
    except DefusedXmlException as exc:
        raise MessageFormatError(f"forbidden XML construct: {type(exc).__name__}", code="forbidden_xml") from exc
    except ParseError as exc:
        raise MessageFormatError(f"malformed XML: {exc}", code="malformed_xml") from exc
    except (UnicodeError, ValueError) as exc:
        raise MessageFormatError("undecodable XML text", code="bad_encoding") from exc
    if root.tag != "xml":
        raise MessageFormatError(f"unexpected root element <{root.tag}>", code="malformed_xml")
    for count, _ in enumerate(root.iter(), start=1):
        if count > MAX_ELEMENTS:
            raise MessageFormatError("too many XML elements", code="too_large")
    return root


def _opt(root: Element, tag: str, *, strip: bool = True) -> str | None:
    elem = root.find(tag)
    if elem is None:
        return None
    text = elem.text or ""
    return text.strip() if strip else text


def _req(root: Element, tag: str) -> str:
    value = _opt(root, tag)
    if not value:
        raise MessageFormatError(f"missing <{tag}>", code="missing_field")
    return value


def _opt_id(root: Element, tag: str) -> str | None:
    return _opt(root, tag) or None


def _parse_uint(value: str, tag: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_INT_DIGITS:
        raise MessageFormatError(f"<{tag}> is not an unsigned integer", code="bad_field")
    return int(value)


def _leaf_fields(root: Element) -> dict[str, str]:
    """Leaves not mapped to typed attributes, by path; the first of repeated paths wins."""
    out: dict[str, str] = {}
    stack: list[tuple[str, Element]] = [(child.tag, child) for child in reversed(root)]
    while stack:
        path, elem = stack.pop()
        children = list(elem)
        if children:
            stack.extend((f"{path}/{child.tag}", child) for child in reversed(children))
        elif path not in _TYPED_FIELDS:
            out.setdefault(path, elem.text or "")
    return out


def parse_envelope(body: bytes | str) -> Envelope:
    """Parse `<xml><ToUserName/><AgentID/><Encrypt/></xml>` (AgentID absent for OA safe mode)."""
    root = _parse_root(body)
    return Envelope(
        to_user_name=_opt(root, "ToUserName") or "",
        agent_id=_opt_id(root, "AgentID"),
        encrypt=_req(root, "Encrypt"),
    )


def parse_reply_envelope(body: bytes | str) -> ReplyEnvelope:
    """Parse an encrypted passive reply `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`."""
    root = _parse_root(body)
    return ReplyEnvelope(
        encrypt=_req(root, "Encrypt"),
        msg_signature=_req(root, "MsgSignature"),
        timestamp=_req(root, "TimeStamp"),
        nonce=_req(root, "Nonce"),
    )


def parse_inbound(xml: bytes | str) -> InboundMessage:
    """Parse a decrypted self-built-app / OA message or event into typed fields (content kept verbatim)."""
    root = _parse_root(xml)
    event = _opt(root, "Event")
    return InboundMessage(
        to_user_name=_req(root, "ToUserName"),
        from_user_name=_req(root, "FromUserName"),
        create_time=_parse_uint(_req(root, "CreateTime"), "CreateTime"),
        msg_type=_req(root, "MsgType"),
        msg_id=_opt_id(root, "MsgId"),
        agent_id=_opt_id(root, "AgentID"),
        content=_opt(root, "Content", strip=False),
        media_id=_opt_id(root, "MediaId"),
        event=event.lower() if event else None,
        event_key=_opt(root, "EventKey", strip=False),
        fields=_leaf_fields(root),
    )


def parse_json_envelope(body: bytes | str) -> str:
    """Return the `encrypt` value of an AI-bot POST body `{"encrypt": "…"}`."""
    text = _to_text(body)
    try:
        obj: object = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MessageFormatError("malformed JSON", code="malformed_json") from exc
    if not isinstance(obj, dict):
        raise MessageFormatError("JSON body is not an object", code="malformed_json")
    encrypt = obj.get("encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise MessageFormatError('missing "encrypt"', code="missing_field")
    return encrypt


def dedup_key(msg: InboundMessage) -> str:
    """Retry-stable key: MsgId for messages, FromUserName+CreateTime+Event for events (protocol §2.3)."""
    if msg.msg_id:
        return f"MsgId={msg.msg_id}"
    if msg.event is not None:
        return f"Event={msg.from_user_name}|{msg.create_time}|{msg.event}"
    return f"Msg={msg.from_user_name}|{msg.create_time}|{msg.msg_type}"


# -- building ----------------------------------------------------------------------------------------------------


def cdata(text: str) -> str:
    """Wrap in CDATA like WeCom does; splits `]]>` and drops characters XML 1.0 cannot carry."""
    return "<![CDATA[" + _XML_ILLEGAL.sub("", text).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _num(value: int | str) -> str:
    text = str(value)
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"expected an unsigned integer, got {value!r}")
    return text


def build_text_reply_xml(to_user: str, from_user: str, create_time: int | str, content: str) -> str:
    """Plaintext of a passive text reply (to = member UserID/OpenID, from = CorpID/gh_ id)."""
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{_num(create_time)}</CreateTime><MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content></xml>"
    )


def build_inner_text_xml(
    to_user: str,
    from_user: str,
    create_time: int | str,
    content: str,
    msg_id: int | str,
    agent_id: int | str | None = None,
) -> str:
    """An inbound text message as WeCom sends it (for fakes/bench/tests); `agent_id=None` gives the OA shape."""
    agent = "" if agent_id is None else f"<AgentID>{_num(agent_id)}</AgentID>"
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{_num(create_time)}</CreateTime><MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content><MsgId>{_num(msg_id)}</MsgId>{agent}</xml>"
    )


def build_inner_event_xml(
    to_user: str,
    from_user: str,
    create_time: int | str,
    event: str,
    event_key: str | None = None,
    agent_id: int | str | None = None,
) -> str:
    """An inbound event (subscribe, enter_agent, click, …) as WeCom sends it (for fakes/bench/tests)."""
    key = "" if event_key is None else f"<EventKey>{cdata(event_key)}</EventKey>"
    agent = "" if agent_id is None else f"<AgentID>{_num(agent_id)}</AgentID>"
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{_num(create_time)}</CreateTime><MsgType>{cdata('event')}</MsgType>"
        f"<Event>{cdata(event)}</Event>{key}{agent}</xml>"
    )


def build_envelope_xml(to_user_name: str, encrypt: str, agent_id: int | str | None = None) -> str:
    """The outer POST body WeCom sends; `agent_id=None` gives the OA safe-mode shape."""
    agent = "" if agent_id is None else f"<AgentID>{cdata(str(agent_id))}</AgentID>"
    return f"<xml><ToUserName>{cdata(to_user_name)}</ToUserName><Encrypt>{cdata(encrypt)}</Encrypt>{agent}</xml>"


def build_reply_envelope_xml(encrypt: str, msg_signature: str, timestamp: str, nonce: str) -> str:
    """The encrypted passive-reply body, laid out exactly like Tencent's sample (newline-separated)."""
    return (
        f"<xml>\n<Encrypt>{cdata(encrypt)}</Encrypt>\n<MsgSignature>{cdata(msg_signature)}</MsgSignature>\n"
        f"<TimeStamp>{_num(timestamp)}</TimeStamp>\n<Nonce>{cdata(nonce)}</Nonce>\n</xml>"
    )
