"""Fake WeCom API (replaces https://qyapi.weixin.qq.com): gettoken, message/send, media/upload, media/get,
the web login with `auth/getuserinfo` (wecom_login.py), plus fault knobs.

Behaviour follows wecom-protocol.md §3: HTTP 200 with an `errcode` always, tokens per secret, 2048-byte
content limit. Media follow wecom-media-oauth-cards.md §1: uploads checked against WeCom's type and
size limits (media_library.py), media ids that expire after three days (`expire_media` ends them
now, `advance_media_clock` ages them all), `media/get` answering the bytes or the JSON 40007 error,
scripted upload errcodes (`fail_next_uploads`), and picture URLs as WeCom's CDN serves them
(`serve_file`: a message's `PicUrl`, an AI-bot image's encrypted file). Faults are scriptable from Python or,
for a separate process, under `/_fake/...`: errcodes for the next calls, latency, revoked tokens,
and an outage in which the API host refuses connections (`refuse_connections(seconds)`: the
listening socket is really closed, then reopened on the same port)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_devkit.fakes.media_library import MEDIA_TTL_S, WECOM_UPLOADS, MediaLibrary, StoredMedia, UploadPolicy
from wxbot_devkit.fakes.server import FakeService, base_arg_parser, serve_forever
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom_cards import DUPLICATE_TASK, CardDesk
from wxbot_devkit.fakes.wecom_login import WebLogin

MAX_CONTENT_BYTES = 2048
TEXT_MSGTYPES = frozenset({"text", "markdown"})
MEDIA_MSGTYPES = frozenset({"image", "voice", "video", "file"})  # each names its media by media_id
SUPPORTED_MSGTYPES = TEXT_MSGTYPES | MEDIA_MSGTYPES | {"template_card"}

ERRMSGS: Mapping[int, str] = MappingProxyType(
    {
        -1: "system busy",
        0: "ok",
        40001: "invalid credential",
        40004: "invalid media type",
        40005: "invalid file type",
        40006: "invalid file size",
        40007: "invalid media_id",
        40008: "invalid message type",
        40009: "invalid image size",
        40011: "invalid video size",
        40013: "invalid corpid",
        40029: "invalid code",
        40014: "invalid access_token",
        40056: "invalid agentid",
        41001: "access_token missing",
        41005: "media data missing",
        41006: "media_id missing",
        41008: "missing code",
        42001: "access_token expired",
        44001: "empty media data",
        44004: "empty content",
        45002: "content size out of limit",
        45007: "voice play time out of limit",
        45009: "api freq out of limit",
        45033: "api concurrent out of limit",
        40058: "invalid parameter",
        42014: "taskid has existed or empty or exceed max len",
        47001: "data format error",
        48002: "api forbidden",
        60020: "not allow to access from your ip",
        81013: "user & party & tag all invalid",
        82001: "All touser & toparty & totag invalid",
        301002: "not allow operate another agent with this accesstoken",
    }
)


def error_body(errcode: int) -> dict[str, Any]:
    """Real errmsgs carry a changing hint; mimic it so clients branch on errcode only."""
    text = ERRMSGS.get(errcode, "fake error")
    hint = f"{text}, hint: [{int(time.time())}-fake], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    return {"errcode": errcode, "errmsg": hint}


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One accepted message/send call."""

    touser: str
    msgtype: str
    content: str
    agentid: int
    received_at: float  # time.time()
    msgid: str
    media_id: str = ""  # image/voice/video/file messages ("" for text)

    @property
    def recipients(self) -> list[str]:
        return self.touser.split("|")


class FakeWeCom(FakeService):
    """State and ASGI app of the fake. Thread-safe: the app may serve on another thread than the test."""

    upload_policy: UploadPolicy = WECOM_UPLOADS

    def __init__(
        self,
        corp_id: str = "wwfakecorp00000001",
        corp_secret: str = "fake-secret",
        *,
        agent_id: int | None = None,
        token_ttl_s: int = 7200,
        latency_s: float = 0.0,
        media: Mapping[str, bytes] | None = None,
        record_limit: int = 100_000,
        on_message: Callable[[SentMessage], None] | None = None,
        media_ttl_s: float = MEDIA_TTL_S,
        members: Mapping[str, str] | None = None,
        login_domain: str = "127.0.0.1",
    ) -> None:
        super().__init__()
        # Called with each accepted message, on the thread serving the fake (the benchmark's clock).
        self.on_message = on_message
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.agent_id = agent_id  # when set, sends for another agentid get 301002
        self.token_ttl_s = token_ttl_s
        self._default_latency_s = latency_s
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.media_library = MediaLibrary(self.upload_policy, media_ttl_s)
        for media_id, data in (media or {}).items():
            self.add_media(media_id, data)
        self._messages: deque[SentMessage] = deque(maxlen=record_limit)
        self._send_faults: deque[int] = deque()
        self._gettoken_faults: deque[int] = deque()
        self._upload_faults: deque[int] = deque()
        self.upload_calls = 0
        self.gettoken_calls = 0
        self.send_calls = 0
        self.token_rejections = 0  # calls refused for an unknown or expired access token
        self._outages: set[asyncio.Task[None]] = set()
        self._cdn: dict[str, tuple[bytes, str]] = {}  # name -> (bytes, content type): PicUrl / AI-bot image URLs
        self.cdn_requests: list[str] = []
        self.media_get_calls = 0
        self.cards = CardDesk()  # template cards sent (not among `messages`), clicks, card updates
        # The web login (企业微信Web登录) of this corp's app: members, single-use codes.
        self.web_login = WebLogin(corp_id, lambda: self.agent_id, members, trusted_domain=login_domain)

    # -- knobs -------------------------------------------------------------------------------------

    def fail_next_sends(self, *errcodes: int) -> None:
        """The next len(errcodes) send calls answer these errcodes, in order (e.g. 42001, 45009, -1)."""
        with self._lock:
            self._send_faults.extend(errcodes)

    def fail_next_uploads(self, *errcodes: int) -> None:
        """The next len(errcodes) media/upload calls answer these errcodes, in order (e.g. -1, 45009)."""
        with self._lock:
            self._upload_faults.extend(errcodes)

    def fail_next_gettokens(self, *errcodes: int) -> None:
        with self._lock:
            self._gettoken_faults.extend(errcodes)

    def invalidate_tokens(self) -> None:
        """Every token issued so far now gets 42001, as when WeCom revokes a token early."""
        with self._lock:
            self._tokens.clear()

    def add_media(
        self,
        media_id: str,
        data: bytes,
        content_type: str = "image/jpeg",
        filename: str | None = None,
        media_type: str | None = None,
    ) -> None:
        """Serve `data` under `media_id` (no checks); its type (image/voice/…) follows the content type."""
        self.media_library.add(media_id, data, content_type, filename, media_type)

    def serve_file(self, name: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at a URL of its own, as WeCom's picture CDN serves a message's `PicUrl` (or,
        encrypted, an AI-bot image); returns the URL. Tests may serve anything: HTML, huge files."""
        with self._lock:
            self._cdn[name] = (data, content_type)
        return f"{self.base_url}/_fake/cdn/{name}"

    def expire_media(self, *media_ids: str) -> None:
        """These media ids (every one when none are given) now answer 40007, as three days later."""
        self.media_library.expire(*media_ids)

    def advance_media_clock(self, seconds: float) -> None:
        """Media ids age `seconds` at once (three days: every media id so far answers 40007)."""
        self.media_library.advance(seconds)

    def reset(self) -> None:
        """Forget messages, counters and pending faults; issued tokens and media stay valid."""
        with self._lock:
            self._messages.clear()
            self._send_faults.clear()
            self._gettoken_faults.clear()
            self._upload_faults.clear()
            self.gettoken_calls = self.send_calls = self.token_rejections = self.upload_calls = 0
            self.latency_s = self._default_latency_s
        self.media_library.forget_uploads()
        self.cards.reset()

    # -- inspection --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def uploads(self) -> list[StoredMedia]:
        """Every accepted media/upload, oldest first (the bytes, type, filename and media_id)."""
        return self.media_library.uploads

    def media(self, media_id: str) -> StoredMedia | None:
        """What `media/get` would serve for `media_id` (None when unknown or expired)."""
        return self.media_library.get(media_id)

    async def wait_for_uploads(self, count: int = 1, timeout: float = 5.0) -> list[StoredMedia]:  # noqa: ASYNC109
        """Wait until at least `count` uploads were accepted; returns them all."""
        return await wait_until(
            lambda: ups if len(ups := self.uploads) >= count else None,
            timeout,
            f"{count} media upload(s) (have {len(self.uploads)})",
        )

    def messages_for(self, touser: str | None = None) -> list[SentMessage]:
        msgs = self.messages
        return msgs if touser is None else [m for m in msgs if touser in m.recipients]

    async def wait_for_messages(
        self,
        touser: str | None = None,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for polling, part of the test API
    ) -> list[SentMessage]:
        """Wait until at least `count` messages were accepted for `touser` (any user if None); returns them all."""
        return await wait_until(
            lambda: msgs if len(msgs := self.messages_for(touser)) >= count else None,
            timeout,
            f"{count} WeCom message(s) to {touser or 'anyone'} (have {len(self.messages_for(touser))})",
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "gettoken_calls": self.gettoken_calls,
                "send_calls": self.send_calls,
                "token_rejections": self.token_rejections,
                "messages": len(self._messages),
                "uploads": len(self.media_library.uploads),
                "upload_calls": self.upload_calls,
                "pending_send_errcodes": list(self._send_faults),
                "latency_s": self.latency_s,
                "offline": self.offline,
            }

    # -- protocol ----------------------------------------------------------------------------------

    def _pop(self, faults: deque[int]) -> int | None:
        with self._lock:
            return faults.popleft() if faults else None

    def _check_token(self, token: str | None) -> int:
        if not token:
            return 41001
        with self._lock:
            expiry = self._tokens.get(token)
            if expiry is not None and expiry > time.monotonic():
                return 0
            self.token_rejections += 1
        return 42001

    async def _delay(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    async def _gettoken(self, request: Request) -> Response:
        with self._lock:
            self.gettoken_calls += 1
        await self._delay()
        if (fault := self._pop(self._gettoken_faults)) is not None:
            return JSONResponse(error_body(fault))
        if request.query_params.get("corpid") != self.corp_id:
            return JSONResponse(error_body(40013))
        if request.query_params.get("corpsecret") != self.corp_secret:
            return JSONResponse(error_body(40001))
        return self._issue_token()

    def _issue_token(self) -> Response:
        token = secrets.token_urlsafe(48)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > 1000:
                self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_ttl_s
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.token_ttl_s})

    def _agentid_error(self, body: dict[str, Any]) -> int:
        """The errcode of a body's `agentid` (0: this app's), required by message/send and update_template_card."""
        agentid = body.get("agentid")
        if not isinstance(agentid, int) or isinstance(agentid, bool):
            return 40056
        if self.agent_id is not None and agentid != self.agent_id:
            return 301002
        return 0

    def _validate_send(self, body: object) -> tuple[int, SentMessage | None]:
        if not isinstance(body, dict):
            return 47001, None
        if errcode := self._agentid_error(body):
            return errcode, None
        agentid = body["agentid"]
        touser = body.get("touser")
        if not isinstance(touser, str) or not touser:
            return 82001, None
        msgtype = body.get("msgtype")
        if msgtype not in SUPPORTED_MSGTYPES:
            return 40008, None
        section = body.get(msgtype)
        if msgtype == "template_card":
            return self.cards.check(touser, section), None
        if msgtype in MEDIA_MSGTYPES:
            errcode, media_id = self._check_media_section(msgtype, section)
            if errcode:
                return errcode, None
            return 0, SentMessage(touser, msgtype, "", agentid, time.time(), secrets.token_hex(16), media_id)
        content = section.get("content") if isinstance(section, dict) else None
        if not isinstance(content, str) or not content:
            return 44004, None
        if len(content.encode()) > MAX_CONTENT_BYTES:
            return 45002, None
        return 0, SentMessage(touser, msgtype, content, agentid, time.time(), secrets.token_hex(16))

    def _check_media_section(self, msgtype: str, section: object) -> tuple[int, str]:
        """An image/voice/video/file message names a live media id of its own type (else 40007)."""
        media_id = section.get("media_id") if isinstance(section, dict) else None
        if not isinstance(media_id, str) or not media_id:
            return 41006, ""
        if self.media_library.get(media_id, msgtype) is None:
            return 40007, ""
        return 0, media_id

    async def _send(self, request: Request) -> Response:
        with self._lock:
            self.send_calls += 1
        await self._delay()
        if (fault := self._pop(self._send_faults)) is not None:
            return JSONResponse(error_body(fault))
        if errcode := self._check_token(request.query_params.get("access_token")):
            return JSONResponse(error_body(errcode))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_body(47001))
        errcode, message = self._validate_send(body)
        if errcode == 0 and message is None:  # a template card: kept apart from the text messages
            response_code = self.cards.accept(body["touser"], body["template_card"])
            if response_code is None:
                return JSONResponse(error_body(DUPLICATE_TASK))
            msgid = secrets.token_hex(16)
            return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": msgid, "response_code": response_code})
        if message is None:
            return JSONResponse(error_body(errcode))
        with self._lock:
            self._messages.append(message)
        if self.on_message is not None:
            self.on_message(message)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": message.msgid})

    async def _update_card(self, request: Request) -> Response:
        await self._delay()
        if errcode := self._check_token(request.query_params.get("access_token")):
            return JSONResponse(error_body(errcode))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_body(47001))
        errcode = self._agentid_error(body) if isinstance(body, dict) else 47001
        errcode = errcode or self.cards.update(body)
        return JSONResponse(error_body(errcode) if errcode else {"errcode": 0, "errmsg": "ok", "invaliduser": []})

    def _token_error(self, errcode: int) -> int:
        """The errcode a bad token gets on this API (the OA says 40001 where WeCom says 42001)."""
        return errcode

    async def _media_upload(self, request: Request) -> Response:
        with self._lock:
            self.upload_calls += 1
        await self._delay()
        if (fault := self._pop(self._upload_faults)) is not None:
            return JSONResponse(error_body(fault))
        if errcode := self._check_token(request.query_params.get("access_token")):
            return JSONResponse(error_body(self._token_error(errcode)))
        media_type = request.query_params.get("type", "")
        if media_type not in self.upload_policy.rules:
            return JSONResponse(error_body(self.upload_policy.bad_type_errcode))
        try:
            async with request.form(max_files=4, max_fields=16) as form:
                part = form.get("media")
                if not isinstance(part, UploadFile):  # missing, or a field without a filename
                    return JSONResponse(error_body(self.upload_policy.no_media_errcode))
                data, filename = await part.read(), part.filename or "media"
        except (HTTPException, MultiPartException):  # a broken multipart body
            return JSONResponse(error_body(self.upload_policy.no_media_errcode))
        if errcode := self.media_library.check(media_type, data):
            return JSONResponse(error_body(errcode))
        stored = self.media_library.upload(media_type, data, filename)
        return JSONResponse(self._upload_answer(stored))

    def _upload_answer(self, stored: StoredMedia) -> dict[str, Any]:
        # WeCom's sample has created_at as a string.
        return {
            "errcode": 0,
            "errmsg": "",
            "type": stored.media_type,
            "media_id": stored.media_id,
            "created_at": str(int(stored.created_at)),
        }

    async def _cdn_get(self, request: Request) -> Response:
        name = request.path_params["name"]
        with self._lock:
            self.cdn_requests.append(name)
            found = self._cdn.get(name)
        if found is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(found[0], media_type=found[1])

    async def _media_get(self, request: Request) -> Response:
        with self._lock:
            self.media_get_calls += 1
        await self._delay()
        if errcode := self._check_token(request.query_params.get("access_token")):
            return JSONResponse(error_body(self._token_error(errcode)))
        media = self.media_library.get(request.query_params.get("media_id", ""))
        if media is None:  # unknown or older than three days: JSON, HTTP 200
            return JSONResponse(error_body(40007))
        disposition = f'attachment; filename="{media.filename}"'
        return Response(media.data, media_type=media.content_type, headers={"Content-Disposition": disposition})

    # -- control API -------------------------------------------------------------------------------

    async def _ctl_messages(self, request: Request) -> Response:
        msgs = self.messages_for(request.query_params.get("touser"))
        return JSONResponse({"messages": [asdict(m) for m in msgs]})

    async def _ctl_faults(self, request: Request) -> Response:
        spec = json.loads(await request.body() or b"{}")
        self.fail_next_sends(*(int(c) for c in spec.get("send_errcodes", [])))
        self.fail_next_gettokens(*(int(c) for c in spec.get("gettoken_errcodes", [])))
        self.fail_next_uploads(*(int(c) for c in spec.get("upload_errcodes", [])))
        if "latency_s" in spec:
            self.latency_s = float(spec["latency_s"])
        if spec.get("invalidate_tokens"):
            self.invalidate_tokens()
        if "expire_media" in spec:  # true: every media id; a list: those
            expire = spec["expire_media"]
            if expire is True:
                self.expire_media()
            elif isinstance(expire, list):
                self.expire_media(*(str(m) for m in expire))
        if "media_clock_s" in spec:  # media ids age this much at once
            self.advance_media_clock(float(spec["media_clock_s"]))
        if "offline_s" in spec:  # after this answer is sent: the outage closes this connection too
            outage = asyncio.create_task(self.refuse_connections(float(spec["offline_s"])))
            self._outages.add(outage)
            outage.add_done_callback(self._outages.discard)
        return JSONResponse(self.stats())

    async def _ctl_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse(self.stats())

    async def _ctl_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _ctl_add_media(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        content_type = request.headers.get("content-type", "application/octet-stream")
        self.add_media(media_id, await request.body(), content_type, request.query_params.get("filename"))
        return JSONResponse({"media_id": media_id})

    async def _ctl_uploads(self, request: Request) -> Response:
        return JSONResponse({"uploads": [u.summary() for u in self.uploads]})

    async def _ctl_get_media(self, request: Request) -> Response:
        """The stored bytes of any media id, expired or not (for tests in another process)."""
        media = self.media_library.get(request.path_params["media_id"])
        if media is None:
            return JSONResponse({"error": "no such media"}, status_code=404)
        return Response(media.data, media_type=media.content_type)

    def _media_routes(self) -> list[Route]:
        return [
            Route("/cgi-bin/media/upload", self._media_upload, methods=["POST"]),
            Route("/cgi-bin/media/get", self._media_get, methods=["GET"]),
            Route("/_fake/cdn/{name}", self._cdn_get, methods=["GET"]),
            Route("/_fake/uploads", self._ctl_uploads, methods=["GET"]),
            Route("/_fake/media/{media_id}", self._ctl_add_media, methods=["POST"]),
            Route("/_fake/media/{media_id}", self._ctl_get_media, methods=["GET"]),
        ]

    def build_app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/cgi-bin/gettoken", self._gettoken, methods=["GET"]),
                Route("/cgi-bin/message/send", self._send, methods=["POST"]),
                Route("/cgi-bin/message/update_template_card", self._update_card, methods=["POST"]),
                *self._media_routes(),
                *self.web_login.routes(self._check_token, error_body),
                Route("/_fake/messages", self._ctl_messages, methods=["GET"]),
                Route("/_fake/faults", self._ctl_faults, methods=["POST"]),
                Route("/_fake/reset", self._ctl_reset, methods=["POST"]),
                Route("/_fake/stats", self._ctl_stats, methods=["GET"]),
            ]
        )


def main(argv: list[str] | None = None) -> None:
    parser = base_arg_parser("Fake WeCom API server")
    parser.add_argument("--corp-id", default="wwfakecorp00000001")
    parser.add_argument("--corp-secret", default="fake-secret")
    parser.add_argument("--agent-id", type=int, default=None)
    parser.add_argument("--token-ttl", type=int, default=7200)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    parser.add_argument("--login-domain", default="127.0.0.1", help="the app's trusted domain for web-login redirects")
    args = parser.parse_args(argv)
    fake = FakeWeCom(
        args.corp_id,
        args.corp_secret,
        agent_id=args.agent_id,
        token_ttl_s=args.token_ttl,
        latency_s=args.latency,
        login_domain=args.login_domain,
    )
    serve_forever(fake.app, args.host, args.port)


if __name__ == "__main__":
    main()
