"""Hostile input on every inbound surface of the gateway, as one table.

Surfaces: the WeCom app callback (`/wecom/callback`), the Official Account callback
(`/wechat/callback`, plain and safe mode), the AI bot callback (`/wecom/aibot/callback`) and the
WebSocket bridge (`/ws/bridge`). Each row is sent to one stack (one gateway replica with all four
surfaces configured) and must be answered within `DEADLINE_S` with its 4xx and reason, its error
frame, or its close code; the event log's last sequence must not move, no fake channel may get a
send, and `/healthz` and `/readyz` must still answer 200. After the table: 500 bad signatures at
once, then a valid message on every surface is answered exactly once, and no request was ever
answered 5xx nor did any handler raise.

`python -m tests.e2e.test_hostile_input` prints the table for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import nats
import pytest
import websockets
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nats.aio.client import Client as Nats
from nats.js.errors import NotFoundError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.harness import CONFIG, VECTORS, World, running_world
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_gateway.conversation import conversation_id
from wxbot_nlp.drafting import IMAGE_NOTICE
from wxbot_wecom.crypto import CallbackCrypto, decode_aes_key
from wxbot_wecom.messages import build_envelope_xml, build_inner_text_xml
from wxbot_wecom.signature import plain_signature

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEADLINE_S = 2.0  # every row is answered within this (a stalled body: within the body timeout plus this)
BODY_TIMEOUT_S = 1.0  # GATEWAY_BODY_TIMEOUT_S of this stack (default 10), so the stalled-body rows stay short
MAX_BODY = 64 * 1024  # GATEWAY_MAX_BODY_BYTES default
FLOOD = 500
TOKEN, AES_KEY, CORP, AGENT = CONFIG["token"], CONFIG["encoding_aes_key"], CONFIG["corpid"], CONFIG["agentid"]
APP_ID = VECTORS["i_official_account_safe_mode_post"]["appid"]
GH_ID = "gh_0123456789ab"
BRIDGE_TOKEN = "hostile-bridge-token"
APP = CallbackCrypto(TOKEN, AES_KEY, CORP)
OA = CallbackCrypto(TOKEN, AES_KEY, APP_ID)
AIBOT = CallbackCrypto(TOKEN, AES_KEY, "")
XML = {"content-type": "text/xml"}
JSON = {"content-type": "application/json"}
MULTIPART = {"content-type": "multipart/form-data; boundary=x"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
METHOD_NOT_ALLOWED = '{"detail":"Method Not Allowed"}'  # FastAPI's answer

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY l0 "lol">'
    + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    + "]><xml><Encrypt>&l9;</Encrypt><Content>&l9;</Content></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><Encrypt>&xxe;</Encrypt><Content>&xxe;</Content></xml>"
)
EXTERNAL_DTD = '<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml><Encrypt>x</Encrypt></xml>'
DEEP_JSON = "[" * 20_000 + "]" * 20_000  # past the recursion limit, within the body limit
HUGE_NUMBER = "9" * 5000  # past Python's 4300-digit int limit


# -- requests -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str] | str  # a str is sent as it is (already percent-encoded)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the body streams in chunks
    stall: bool = False  # declare twice the body's length, send the body, then wait

    @property
    def target(self) -> str:
        query = self.query if isinstance(self.query, str) else urlencode(self.query)
        return f"{self.path}?{query}" if query else self.path


Build = Callable[[], HttpRequest]


@dataclass(frozen=True)
class HttpCase:
    surface: str
    description: str
    expected: str  # "400 malformed_xml": the status, then the answer's body (the reason, also the metric label)
    build: Build

    @property
    def status(self) -> int:
        return int(self.expected.split()[0])

    @property
    def reason(self) -> str:
        return self.expected.partition(" ")[2] or METHOD_NOT_ALLOWED

    @property
    def answer(self) -> str:
        return f"{self.status} `{self.reason}`" if self.status != 405 else "405"


def table(surface: str, rows: list[tuple[str, str, Build]]) -> list[HttpCase]:
    return [HttpCase(surface, description, expected, build) for description, expected, build in rows]


@dataclass(frozen=True)
class BridgeCase:
    description: str
    frame: str | bytes | None  # None: only the handshake
    error: str = ""  # the error frame says this
    close: int = 0  # or the socket is closed with this code
    token: str | None = BRIDGE_TOKEN
    utf8_text: bool = False  # send bytes as a text frame (the client library would refuse invalid UTF-8)
    surface: str = "bridge"

    @property
    def answer(self) -> str:
        if self.frame is None:
            return "handshake 403"
        if self.close:
            return f"close {self.close}"
        return f'error frame "…{self.error}…", socket stays open'


def now() -> str:
    return str(int(time.time()))


def hours(n: int) -> str:
    return str(int(time.time()) + 3600 * n)


def as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def request(
    method: str, path: str, query: dict[str, str], body: bytes, headers: dict[str, str], /, **over: Any
) -> HttpRequest:
    """The request, with `over` replacing its fields (a str body is encoded)."""
    if isinstance(over.get("body"), str):
        over["body"] = over["body"].encode()
    return replace(HttpRequest(method, path, query, body, headers), **over)


# -- WeCom app ----------------------------------------------------------------------------------------------------


def app_inner(
    user: str = "hostile-wecom", to: str = CORP, agent: str = AGENT, created: str = "", text: str = "?"
) -> bytes:
    return build_inner_text_xml(to, user, created or now(), text, str(time.time_ns()), agent).encode()


def inner_xml(first: bytes) -> bytes:
    """A decrypted message whose `first` elements come before (and so win over) the good ones."""
    good = f"<ToUserName>{CORP}</ToUserName><FromUserName>u</FromUserName><CreateTime>{now()}</CreateTime>"
    return b"<xml>" + first + good.encode() + b"<MsgType>text</MsgType><MsgId>1</MsgId></xml>"


def app_post(
    encrypt: str, ts: str | None = None, nonce: str | None = "n1", signature: str | None = None, **over: Any
) -> HttpRequest:
    """POST /wecom/callback with `encrypt`, signed over nonce n1 whatever `nonce` is sent (None: none)."""
    stamp = now() if ts is None else ts
    query = {"msg_signature": APP.sign(stamp, "n1", encrypt) if signature is None else signature, "timestamp": stamp}
    query |= {"nonce": nonce} if nonce is not None else {}
    return request("POST", "/wecom/callback", query, build_envelope_xml(CORP, encrypt, AGENT).encode(), XML, **over)


def app(inner: bytes | str = b"", **over: Any) -> HttpRequest:
    """`inner` (default: a good message) encrypted for this corp and signed; `over`: see `app_post`."""
    return app_post(APP.encrypt(as_bytes(inner) or app_inner()), **over)


def app_url_check(echostr: str = "", **query: str) -> HttpRequest:
    params = APP.build_url_verification("echo", now(), "n1")
    if echostr:  # signed, so that the echostr itself is what is wrong
        params |= {"echostr": echostr, "msg_signature": APP.sign(params["timestamp"], "n1", echostr)}
    return HttpRequest("GET", "/wecom/callback", params | query)


def raw_aes(plain: bytes) -> str:
    """AES-CBC with the app's key but without the protocol's padding and length header."""
    key = decode_aes_key(AES_KEY)
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


OTHER_CORP = CallbackCrypto(TOKEN, AES_KEY, "wwsomeoneelse0000")
TOO_BIG_XML = b"<xml>" + b"x" * MAX_BODY + b"</xml>"
NO_SENDER = f"<xml><ToUserName>{CORP}</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"

WECOM_CASES = table(
    "wecom",
    [
        ("URL check (GET), wrong signature", "403 bad_signature", lambda: app_url_check(msg_signature="0" * 40)),
        ("URL check (GET), echostr not base64", "400 bad_base64", lambda: app_url_check(echostr="not*b64")),
        ("no msg_signature", "403 bad_signature", lambda: app(signature="")),
        ("wrong msg_signature", "403 bad_signature", lambda: app(signature="0" * 40)),
        ("nonce missing (signed with one)", "403 bad_signature", lambda: app(nonce=None)),
        ("timestamp missing", "400 bad_timestamp", lambda: app(ts="")),
        ("timestamp not a number", "400 bad_timestamp", lambda: app(ts="yesterday")),
        ("timestamp of 5000 digits", "400 bad_timestamp", lambda: app(ts=HUGE_NUMBER)),
        ("timestamp a non-ASCII digit (²)", "400 bad_timestamp", lambda: app(query="timestamp=%C2%B2&nonce=1")),
        ("replayed: signed timestamp 1 h old", "403 stale_timestamp", lambda: app(ts=hours(-1))),
        ("signed timestamp 1 h in the future", "403 stale_timestamp", lambda: app(ts=hours(1))),
        (f"body over {MAX_BODY} bytes (declared)", "413 too_large", lambda: app(body=TOO_BIG_XML)),
        (f"body over {MAX_BODY} bytes (chunked)", "413 too_large", lambda: app(body=TOO_BIG_XML, chunked=True)),
        ("body stops half-way (stalled)", "408 body_timeout", lambda: app(stall=True)),
        ("empty body", "400 empty", lambda: app(body=b"")),
        ("truncated XML", "400 malformed_xml", lambda: app(body="<xml><ToUserName>ww</ToUserName><Encrypt>abc")),
        ("root element not <xml>", "400 malformed_xml", lambda: app(body="<html><Encrypt>x</Encrypt></html>")),
        ("1001 XML elements", "400 too_large", lambda: app(body="<xml>" + "<a/>" * 1001 + "</xml>")),
        ("content type application/json", "415 unsupported_media_type", lambda: app(headers=JSON)),
        ("content type multipart/form-data", "415 unsupported_media_type", lambda: app(headers=MULTIPART)),
        ("invalid UTF-8 in the envelope", "400 bad_encoding", lambda: app(body=b"<xml><Encrypt>\xff</Encrypt></xml>")),
        ("billion laughs in the envelope", "400 forbidden_xml", lambda: app(body=BILLION_LAUGHS)),
        ("external entity (file:///etc/passwd)", "400 forbidden_xml", lambda: app(body=EXTERNAL_ENTITY)),
        ("external DTD", "400 forbidden_xml", lambda: app(body=EXTERNAL_DTD)),
        ("no <Encrypt>", "400 missing_field", lambda: app(body="<xml><ToUserName>ww</ToUserName></xml>")),
        ("Encrypt not base64", "400 bad_base64", lambda: app_post("not*base64*at*all")),
        ("ciphertext with bad padding", "400 bad_padding", lambda: app_post(raw_aes(bytes(32)))),
        (
            "encrypted for another corp (receive id)",
            "400 bad_receive_id",
            lambda: app_post(OTHER_CORP.encrypt(app_inner())),
        ),
        ("decrypted payload not XML", "400 malformed_xml", lambda: app("this is not xml")),
        ("decrypted payload not UTF-8", "400 bad_encoding", lambda: app(inner_xml(b"<Content>\xff</Content>"))),
        ("billion laughs in the decrypted payload", "400 forbidden_xml", lambda: app(BILLION_LAUGHS)),
        (
            "lone surrogate (&#xD800;) decrypted",
            "400 malformed_xml",
            lambda: app(inner_xml(b"<Content>&#xD800;</Content>")),
        ),
        ("CreateTime not a number", "400 bad_field", lambda: app(inner_xml(b"<CreateTime>yesterday</CreateTime>"))),
        ("FromUserName missing", "400 missing_field", lambda: app(NO_SENDER)),
        ("unknown AgentID", "403 unknown_agent", lambda: app(app_inner(agent="999999"))),
        ("ToUserName of another corp", "403 wrong_receiver", lambda: app(app_inner(to="wwsomeoneelse0000"))),
        ("method PUT", "405", lambda: app(method="PUT")),
    ],
)


# -- Official Account ---------------------------------------------------------------------------------------------


def oa_inner(text: bytes = b"?", openid: str = "oHOSTILE0000000000000000000", created: bytes = b"") -> bytes:
    head = f"<xml><ToUserName>{GH_ID}</ToUserName><FromUserName>{openid}</FromUserName><CreateTime>".encode()
    tail = f"<MsgId>{time.time_ns()}</MsgId></xml>".encode()
    return (
        head
        + (created or now().encode())
        + b"</CreateTime><MsgType>text</MsgType><Content>"
        + text
        + b"</Content>"
        + tail
    )


def oa(ts: str | None = None, signature: str | None = None, **over: Any) -> HttpRequest:
    """A plain-mode POST /wechat/callback with a good message, signed; `over` replaces fields of the request."""
    stamp = now() if ts is None else ts
    sig = plain_signature(TOKEN, stamp, "777") if signature is None else signature
    query = {"signature": sig, "timestamp": stamp, "nonce": "777", "openid": "oHOSTILE"}
    return request("POST", "/wechat/callback", query, oa_inner(), XML, **over)


def oa_safe(encrypt: str, signature: str | None = None) -> HttpRequest:
    ts = now()
    query = {"encrypt_type": "aes", "signature": plain_signature(TOKEN, ts, "n1"), "timestamp": ts, "nonce": "n1"}
    query["msg_signature"] = OA.sign(ts, "n1", encrypt) if signature is None else signature
    return HttpRequest("POST", "/wechat/callback", query, build_envelope_xml(GH_ID, encrypt).encode(), XML)


def oa_url_check(signature: str) -> HttpRequest:
    return HttpRequest(
        "GET", "/wechat/callback", {"signature": signature, "timestamp": now(), "nonce": "1", "echostr": "e"}
    )


OA_CASES = table(
    "oa",
    [
        ("URL check (GET), wrong signature", "403 bad_signature", lambda: oa_url_check("0" * 40)),
        ("plain mode, no signature", "403 bad_signature", lambda: oa(signature="")),
        ("plain mode, wrong signature", "403 bad_signature", lambda: oa(signature="0" * 40)),
        ("replayed: signed timestamp 1 h old", "403 stale_timestamp", lambda: oa(ts=hours(-1))),
        ("timestamp not a number", "400 bad_timestamp", lambda: oa(ts="12:00")),
        ("plain-mode body not UTF-8", "400 bad_encoding", lambda: oa(body=oa_inner(b"\xc3\x28"))),
        ("billion laughs", "400 forbidden_xml", lambda: oa(body=BILLION_LAUGHS)),
        ("external entity", "400 forbidden_xml", lambda: oa(body=EXTERNAL_ENTITY)),
        ("truncated XML", "400 malformed_xml", lambda: oa(body=oa_inner()[:60])),
        ("required fields missing", "400 missing_field", lambda: oa(body="<xml><MsgType>text</MsgType></xml>")),
        ("CreateTime in Arabic-Indic digits", "400 bad_field", lambda: oa(body=oa_inner(created="١٢٣".encode()))),
        (f"body over {MAX_BODY} bytes", "413 too_large", lambda: oa(body=TOO_BIG_XML)),
        ("content type application/json", "415 unsupported_media_type", lambda: oa(headers=JSON)),
        ("method PUT", "405", lambda: oa(method="PUT")),
        ("safe mode, wrong msg_signature", "403 bad_signature", lambda: oa_safe(OA.encrypt(oa_inner()), "0" * 40)),
        ("safe mode, Encrypt not base64", "400 bad_base64", lambda: oa_safe("not*base64*at*all")),
        ("safe mode, a WeCom corp's receive id", "400 bad_receive_id", lambda: oa_safe(APP.encrypt(oa_inner()))),
        ("safe mode, decrypted payload not XML", "400 malformed_xml", lambda: oa_safe(OA.encrypt(b"not xml"))),
        (
            "safe mode, decrypted payload not UTF-8",
            "400 bad_encoding",
            lambda: oa_safe(OA.encrypt(oa_inner(b"\xed\xa0\x80"))),
        ),
    ],
)


# -- AI bot -------------------------------------------------------------------------------------------------------


def bot_message(user: str = "aibot-hostile", text: str = "?", **over: Any) -> dict[str, Any]:
    payload = {
        "msgid": f"MSG-{time.time_ns()}",
        "aibotid": "AIBOT-HOSTILE",
        "chattype": "single",
        "from": {"userid": user},
        "msgtype": "text",
        "text": {"content": text},
    }
    return payload | over


def bot_post(encrypt: str, ts: str | None = None, signature: str | None = None, **over: Any) -> HttpRequest:
    """POST /wecom/aibot/callback with `encrypt`, signed unless `signature` says otherwise."""
    stamp = now() if ts is None else ts
    sig = AIBOT.sign(stamp, "n1", encrypt) if signature is None else signature
    query = {"msg_signature": sig, "timestamp": stamp, "nonce": "n1"}
    return request("POST", "/wecom/aibot/callback", query, json.dumps({"encrypt": encrypt}).encode(), JSON, **over)


def bot(payload: dict[str, Any] | bytes | str | None = None, **over: Any) -> HttpRequest:
    """`payload` (default: a good message; a dict is JSON-encoded) encrypted and signed; `over`: see `bot_post`."""
    payload = bot_message() if payload is None else payload
    raw = json.dumps(payload) if isinstance(payload, dict) else payload
    return bot_post(AIBOT.encrypt(as_bytes(raw)), **over)


def with_huge_number(payload: dict[str, Any]) -> str:
    return json.dumps(payload)[:-1] + f', "n": {HUGE_NUMBER}}}'  # json.dumps refuses to write one


def bot_url_check(signature: str) -> HttpRequest:
    params = AIBOT.build_url_verification("echo", now(), "n1")
    return HttpRequest("GET", "/wecom/aibot/callback", params | {"msg_signature": signature})


AIBOT_CASES = table(
    "aibot",
    [
        ("URL check (GET), wrong signature", "403 bad_signature", lambda: bot_url_check("f" * 40)),
        ("no msg_signature", "403 bad_signature", lambda: bot(signature="")),
        ("wrong msg_signature", "403 bad_signature", lambda: bot(signature="0" * 40)),
        ("replayed: signed timestamp 1 h old", "403 stale_timestamp", lambda: bot(ts=hours(-1))),
        ("signed timestamp 1 h in the future", "403 stale_timestamp", lambda: bot(ts=hours(1))),
        ("timestamp a float", "400 bad_timestamp", lambda: bot(ts="1712345678.5")),
        (f"body over {MAX_BODY} bytes", "413 too_large", lambda: bot(body=b'{"encrypt": "' + b"A" * MAX_BODY + b'"}')),
        ("body stops half-way (stalled)", "408 body_timeout", lambda: bot(stall=True)),
        ("content type application/x-www-form-urlencoded", "415 unsupported_media_type", lambda: bot(headers=FORM)),
        ("truncated JSON envelope", "400 malformed_json", lambda: bot(body='{"encrypt": "abc')),
        ("envelope a JSON array", "400 malformed_json", lambda: bot(body='["encrypt"]')),
        ("envelope without encrypt", "400 missing_field", lambda: bot(body='{"Encrypt": "x"}')),
        ("encrypt a number", "400 missing_field", lambda: bot(body='{"encrypt": 12345}')),
        ("envelope nested 20000 deep", "400 malformed_json", lambda: bot(body=DEEP_JSON)),
        ("envelope not UTF-8", "400 bad_encoding", lambda: bot(body=b'{"encrypt": "\xff"}')),
        ("Encrypt not base64", "400 bad_base64", lambda: bot_post("not*base64*at*all")),
        (
            "a WeCom corp's receive id",
            "400 bad_receive_id",
            lambda: bot_post(APP.encrypt(json.dumps(bot_message()).encode())),
        ),
        ("decrypted payload not JSON", "400 malformed_json", lambda: bot("<xml>not json</xml>")),
        ("decrypted payload in UTF-16", "400 malformed_json", lambda: bot(json.dumps(bot_message()).encode("utf-16"))),
        ("decrypted payload nested 20000 deep", "400 malformed_json", lambda: bot(DEEP_JSON)),
        ("a 5000-digit number in the payload", "400 malformed_json", lambda: bot(with_huge_number(bot_message()))),
        (
            "text content 1e999 (a float)",
            "400 bad_field",
            lambda: bot(json.dumps(bot_message()).replace('"?"', "1e999")),
        ),
        ('"from" a string', "400 bad_field", lambda: bot(bot_message(**{"from": "zhangsan"}))),
        ("msgid missing", "400 missing_field", lambda: bot(bot_message(msgid=None))),
        ("lone surrogate in from.userid", "400 bad_encoding", lambda: bot(bot_message(user="u\ud800"))),
        ("lone surrogate in the text", "400 bad_encoding", lambda: bot(bot_message(text="hi \udc00"))),
        ("method PUT", "405", lambda: bot(method="PUT")),
    ],
)


# -- WebSocket bridge ---------------------------------------------------------------------------------------------


def frame(**fields: Any) -> str:
    return json.dumps({"sender": "bridge-hostile", "content": "?", "msg_type": "text"} | fields)


BRIDGE_CASES = [
    BridgeCase("handshake without the token", None, token=None),
    BridgeCase("handshake with a wrong token", None, token="wrong-token"),
    BridgeCase("frame not JSON", "not json", error="not JSON"),
    BridgeCase("frame a JSON array", "[1, 2]", error="JSON object"),
    BridgeCase("binary frame", b'{"sender": "a", "content": "binary"}', error="binary"),
    BridgeCase("invalid UTF-8 in a text frame", b'{"sender": "\xff"}', close=1007, utf8_text=True),
    BridgeCase(f"frame over {MAX_BODY} bytes", frame(content="x" * MAX_BODY), close=1009),
    BridgeCase("content over 8 KiB", frame(content="好" * 3000), error="exceeds"),
    BridgeCase("nested 20000 deep", DEEP_JSON, error="not JSON"),
    BridgeCase("a 5000-digit number", frame()[:-1] + f', "n": {HUGE_NUMBER}}}', error="not JSON"),
    BridgeCase("lone surrogate in sender", frame(sender="a\ud800"), error="lone surrogates"),
    BridgeCase("lone surrogate in content", frame(content="hi \udfff"), error="lone surrogates"),
    BridgeCase("sender missing", json.dumps({"content": "x"}), error="'sender'"),
    BridgeCase("sender empty", frame(sender=""), error="'sender'"),
    BridgeCase("sender a number", frame(sender=42), error="'sender'"),
    BridgeCase("content missing", json.dumps({"sender": "a"}), error="'content'"),
    BridgeCase("content an object", frame(content={"text": "x"}), error="'content'"),
    BridgeCase("content blank", frame(content="   "), error="'content'"),
    BridgeCase("msg_type video", frame(msg_type="video"), error="msg_type"),
    BridgeCase("image without a URL or bytes", frame(msg_type="image"), error="exactly one"),
    BridgeCase("image URL not http", frame(msg_type="image", image_url="file:///etc/passwd"), error="http"),
    BridgeCase("image bytes not base64", frame(msg_type="image", image_base64="%%%"), error="base64"),
    BridgeCase("msg_id a number", frame(msg_id=5), error="'msg_id'"),
    BridgeCase("lone surrogate in msg_id", frame(msg_id="m\ud800"), error="'msg_id'"),
]

CASES: list[HttpCase | BridgeCase] = [*WECOM_CASES, *OA_CASES, *AIBOT_CASES, *BRIDGE_CASES]
SURFACE_NAMES = {
    "wecom": "WeCom app",
    "oa": "Official Account",
    "aibot": "AI bot",
    "bridge": "bridge",
}


def markdown_table() -> str:
    rows = ["| surface | input | answer |", "|---|---|---|"]
    rows += [f"| {SURFACE_NAMES[c.surface]} | {c.description} | {c.answer} |" for c in CASES]
    return "\n".join(rows)


# -- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class Hostile:
    world: World
    oa: FakeOfficialAccount
    nc: Nats

    @property
    def url(self) -> str:
        return self.world.stack.gateway_url

    async def last_seq(self) -> int:
        return int((await self.nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq)

    def sends(self) -> int:
        return len(self.world.wecom.messages) + len(self.oa.messages)


@pytest.fixture(scope="module")
async def hostile(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hostile]:
    oa = FakeOfficialAccount(APP_ID, "oa-secret")
    await oa.start()
    env = {
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": "oa-secret",
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_ENCODING_AES_KEY": AES_KEY,
        "WECHAT_API_BASE": oa.base_url,
        "AIBOT_TOKEN": TOKEN,
        "AIBOT_ENCODING_AES_KEY": AES_KEY,
        "GATEWAY_BRIDGE_TOKEN": BRIDGE_TOKEN,
        "GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "IMAGE_IN_ALLOW_PRIVATE": "false",  # as deployed: URLs in messages may only reach public addresses
    }
    try:
        async with running_world(tmp_path_factory.mktemp("hostile"), env) as world:
            nc = await nats.connect(world.stack.nats.url)
            try:
                yield Hostile(world, oa, nc)
            finally:
                await nc.drain()
    finally:
        await oa.stop()


# -- sending ------------------------------------------------------------------------------------------------------


async def send_http(base_url: str, request: HttpRequest) -> tuple[int, str]:
    if request.stall:
        return await send_stalled(base_url, request)
    content: Any = request.body
    if request.chunked:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(request.body), 16 * 1024):
                yield request.body[start : start + 16 * 1024]

        content = chunks()
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE_S) as client:
        resp = await client.request(request.method, request.target, content=content, headers=request.headers)
    return resp.status_code, resp.text


async def send_stalled(base_url: str, request: HttpRequest) -> tuple[int, str]:
    """Declare twice the body's length, send the body and wait: the answer, then the connection closes."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = (
            f"{request.method} {request.target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {2 * len(request.body)}\r\n"
        )
        head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        writer.write(head.encode() + b"\r\n" + request.body)
        await writer.drain()
        answer = await asyncio.wait_for(
            reader.read(), BODY_TIMEOUT_S + DEADLINE_S
        )  # read() ends when the server closes
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/ws/bridge"


async def send_bridge(base_url: str, case: BridgeCase) -> str:
    """What the bridge answered, in the words of `BridgeCase.answer` when it is what the case expects."""
    headers = {"Authorization": f"Bearer {case.token}"} if case.token else {}
    try:
        async with websockets.connect(ws_url(base_url), additional_headers=headers, open_timeout=DEADLINE_S) as ws:
            if case.frame is None:
                return "handshake accepted"
            await ws.send(case.frame, text=True if case.utf8_text else None)
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
            except ConnectionClosed as closed:
                return f"close {closed.rcvd.code if closed.rcvd else 'without a close frame'}"
            if answer.get("type") != "error" or not case.error or case.error not in answer.get("error", ""):
                return f"unexpected frame {answer}"
            await asyncio.wait_for(await ws.ping(), DEADLINE_S)  # the socket is still open
            return f'error frame "…{case.error}…", socket stays open'
    except InvalidStatus as refused:
        return f"handshake {refused.response.status_code}"


async def assert_healthy(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE_S) as client:
        for path in ("/healthz", "/readyz"):
            resp = await client.get(path)
            assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text}"


# -- the table ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{c.surface}: {c.description}" for c in CASES])
async def test_hostile_input_is_refused_quickly_publishes_nothing_and_the_gateway_stays_healthy(
    hostile: Hostile, case: HttpCase | BridgeCase
) -> None:
    before, sends = await hostile.last_seq(), hostile.sends()
    started = time.monotonic()
    if isinstance(case, HttpCase):
        request = case.build()
        status, text = await send_http(hostile.url, request)
        assert (status, text) == (case.status, case.reason)
        deadline = DEADLINE_S + (BODY_TIMEOUT_S if request.stall else 0)
    else:
        assert await send_bridge(hostile.url, case) == case.answer
        deadline = DEADLINE_S
    assert time.monotonic() - started < deadline
    assert await hostile.last_seq() == before, "a hostile request published an event"
    assert hostile.sends() == sends
    await assert_healthy(hostile.url)


@pytest.mark.parametrize(
    "where",
    ["the fake's own loopback URL", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:1/x.png"],
)
async def test_an_image_url_to_a_private_address_is_never_fetched_and_gets_one_notice(
    hostile: Hostile, where: str
) -> None:
    """SSRF: a bridge frame's image URL pointing inside (loopback, cloud metadata, IPv4-mapped IPv6) is
    refused before any connection; the user gets the image notice, once."""
    world = hostile.world
    url = world.wecom.serve_file("internal.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")
    if not where.startswith("the fake"):
        url = where
    fetched = len(world.wecom.cdn_requests)
    headers = {"Authorization": f"Bearer {BRIDGE_TOKEN}"}
    sender = f"bridge-ssrf-{len(where)}"
    async with websockets.connect(ws_url(hostile.url), additional_headers=headers, open_timeout=DEADLINE_S) as ws:
        await ws.send(frame(sender=sender, msg_type="image", image_url=url, content=""))
        kinds: list[str] = []
        replies: list[str] = []
        async with asyncio.timeout(20):
            while not replies:
                got = json.loads(await ws.recv())
                kinds.append(got["type"])
                if got["type"] == "reply":
                    replies.append(got["content"])
    assert kinds == ["ack", "reply"]
    assert replies == [IMAGE_NOTICE]
    assert len(world.wecom.cdn_requests) == fetched, "the gateway fetched a private address"
    assert not [r for r in world.llm.requests if r.images()], "an image reached the model"
    # The gateway records the delivery (ReplySent) just after writing the reply: wait for it, so the
    # tests after this one see a quiet log.
    sent = EventKind.SENT.subject(conversation_id("bridge", "ws", sender))
    deadline = time.monotonic() + DEADLINE_S * 5
    while True:
        try:
            await hostile.nc.jetstream().get_last_msg(EVENTS_STREAM, sent)
            break
        except NotFoundError:
            assert time.monotonic() < deadline, "the reply's delivery was never recorded"
            await asyncio.sleep(0.05)


async def test_a_flood_of_bad_signatures_is_refused_and_a_valid_message_is_answered_right_after(
    hostile: Hostile,
) -> None:
    """500 forged callbacks at once, spread over the three HTTP surfaces; then a real one."""
    forged = [app(signature="0" * 40), oa(signature="0" * 40), bot(signature="0" * 40)]
    before = await hostile.last_seq()
    limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=0)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=hostile.url, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(
            *(
                client.request(r.method, r.target, content=r.body, headers=r.headers)
                for r in (forged[i % len(forged)] for i in range(FLOOD))
            )
        )
    flood_s = time.monotonic() - started
    assert [(a.status_code, a.text) for a in answers] == [(403, "bad_signature")] * FLOOD
    assert await hostile.last_seq() == before
    assert flood_s < 20, f"{FLOOD} forged callbacks took {flood_s:.1f}s"

    sent_at = time.monotonic()
    status, _ = await send_http(hostile.url, app(app_inner("after-flood", text="real one")))
    assert status == 200
    got = await hostile.world.wecom.wait_for_messages("after-flood", 1, timeout=10)
    assert time.monotonic() - sent_at < 5, "the valid message was answered late after the flood"
    assert [m.content for m in got] == ["LLM says: real one (saw 2 messages)"]
    await assert_healthy(hostile.url)


async def quiet(hostile: Hostile) -> None:
    """Every consumer of the event log has handled everything (no reply is still on its way)."""

    async def idle() -> bool:
        infos = await hostile.nc.jetstream().consumers_info(EVENTS_STREAM)
        return all(not (i.num_pending or i.num_ack_pending) for i in infos)

    deadline = time.monotonic() + 20
    while not await idle():
        assert time.monotonic() < deadline, "the pipeline never went idle"
        await asyncio.sleep(0.05)


async def test_after_the_table_each_surface_answers_a_valid_message_exactly_once(hostile: Hostile) -> None:
    world, llm = hostile.world, hostile.world.llm
    # WeCom app: a retry 90 s after the first delivery keeps its original timestamp, and is inside the window.
    late = str(int(time.time()) - 90)
    status, _ = await send_http(
        hostile.url, app(app_inner("after-table", created=late, text="wecom after the table"), ts=late)
    )
    assert status == 200
    # Official Account, plain mode.
    status, text = await send_http(hostile.url, oa(body=oa_inner(b"oa after the table", "oAFTERTABLE")))
    assert (status, text) == (200, "success")
    # AI bot: the stream's placeholder at once, the answer on a refresh.
    status, text = await send_http(hostile.url, bot(bot_message("aibot-after", "aibot after the table")))
    assert status == 200
    sid = json.loads(AIBOT.open_reply_json(text))["stream"]["id"]
    # Bridge.
    async with websockets.connect(
        ws_url(hostile.url), additional_headers={"Authorization": f"Bearer {BRIDGE_TOKEN}"}, open_timeout=DEADLINE_S
    ) as ws:
        await ws.send(frame(sender="bridge-after", content="bridge after the table"))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(2)]
        await world.wecom.wait_for_messages("after-table", 1, timeout=20)
        await hostile.oa.wait_for_messages("oAFTERTABLE", 1, timeout=20)
        await quiet(hostile)
        # Frames arrive in order: once the pong is back, a second reply written before it is queued here.
        await asyncio.wait_for(await ws.ping(), DEADLINE_S)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.01)

    poll = bot({"msgid": f"refresh-{time.time_ns()}", "msgtype": "stream", "stream": {"id": sid}})
    stream = json.loads(AIBOT.open_reply_json((await send_http(hostile.url, poll))[1]))["stream"]
    assert [f["type"] for f in frames] == ["ack", "reply"]
    assert frames[1]["content"] == "LLM says: bridge after the table (saw 2 messages)"
    assert [m.content for m in world.wecom.messages_for("after-table")] == [
        "LLM says: wecom after the table (saw 2 messages)"
    ]
    assert [m.content for m in hostile.oa.messages_for("oAFTERTABLE")] == [
        "LLM says: oa after the table (saw 2 messages)"
    ]
    assert stream == {"id": sid, "finish": True, "content": "LLM says: aibot after the table (saw 2 messages)"}
    asked = [r.last_user_message for r in llm.requests if "after the table" in str(r.last_user_message)]
    assert sorted(asked) == sorted(f"{s} after the table" for s in ("wecom", "oa", "aibot", "bridge"))
    await assert_healthy(hostile.url)


async def test_no_request_was_answered_5xx_and_no_handler_raised(hostile: Hostile) -> None:
    async with httpx.AsyncClient(base_url=hostile.url, timeout=DEADLINE_S) as client:
        metrics = (await client.get("/metrics")).text
    errors = [
        line
        for line in metrics.splitlines()
        if line.startswith("wxbot_http_requests_total{") and 'status="5' in line and not line.endswith(" 0.0")
    ]
    assert errors == []
    raised = [line for line in hostile.world.stack.logs("gateway") if "Exception in ASGI application" in line]
    assert raised == []


def test_the_table_in_docs_is_this_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    assert markdown_table() in doc, "docs/reliability.md: paste `python -m tests.e2e.test_hostile_input`"


if __name__ == "__main__":
    print(markdown_table())
