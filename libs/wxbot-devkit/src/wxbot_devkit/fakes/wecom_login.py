"""The fake WeCom web login (企业微信Web登录): the login page, single-use codes, `auth/getuserinfo`.

As the real one (wecom-media-oauth-cards.md §4.1, §4.3): `GET /wwlogin/sso/login` takes
`login_type=CorpApp`, `appid` (the CorpID), `agentid`, `redirect_uri` and `state`; a member who
confirms is sent to `redirect_uri?code=CODE&state=STATE` (state returned unchanged). A code
works once and expires after five minutes; anything else — unknown, used or expired — is errcode
40029 at `cgi-bin/auth/getuserinfo`. A member's code answers `userid`; someone outside the corp
who scans with personal WeChat gets a code too, whose answer is `openid` and `external_userid`
instead (§4.3). Redirects go only to the app's trusted domain (50001 otherwise). (The fake has
one app per corp, so "another app's code" is not modelled.)
The page is plain HTML: a browser (or a test with an HTTP client) picks a person and confirms.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CODE_TTL_S = 300.0  # "code只能使用一次，5分钟未被使用自动过期"
DEFAULT_MEMBERS: Mapping[str, str] = {"zhangsan": "张三", "lisi": "李四", "wangwu": "王五"}
DEFAULT_OUTSIDERS: Mapping[str, str] = {"wx-guest": "微信用户"}  # personal WeChat, not in the corp
MAX_STATE_BYTES = 128
LOGIN_FIELDS = ("login_type", "appid", "agentid", "redirect_uri", "state")


@dataclass(frozen=True, slots=True)
class IssuedCode:
    userid: str  # a member's userid, or the outsider's key in `outsiders`
    expires_at: float  # time.monotonic()
    member: bool = True


class LoginRefusedError(ValueError):
    """What the real login page would show instead of a QR code."""


class WebLogin:
    """State of the web login: members who can log in and the codes issued to them. Thread-safe."""

    def __init__(
        self,
        corp_id: str,
        agent_id: Callable[[], int | None],
        members: Mapping[str, str] | None = None,
        code_ttl_s: float = CODE_TTL_S,
        trusted_domain: str = "127.0.0.1",
        outsiders: Mapping[str, str] | None = None,
    ) -> None:
        self.corp_id = corp_id
        # the app's "Web网页授权回调域名": WeCom redirects a login only to this host (else 50001)
        self.trusted_domain = trusted_domain
        self._agent_id = agent_id  # the fake's AgentID (None: any number is this corp's app)
        self.members = dict(DEFAULT_MEMBERS if members is None else members)
        self.outsiders = dict(DEFAULT_OUTSIDERS if outsiders is None else outsiders)
        self.code_ttl_s = code_ttl_s
        self._codes: dict[str, IssuedCode] = {}
        self._lock = threading.Lock()

    # -- knobs --------------------------------------------------------------------------------------

    def expire_codes(self) -> None:
        """Every code issued so far is now older than five minutes."""
        with self._lock:
            self._codes.clear()

    def check_request(self, params: Mapping[str, str]) -> None:
        """Raise LoginRefusedError for what WeCom's login page refuses."""
        if params.get("login_type") != "CorpApp":
            raise LoginRefusedError("login_type must be CorpApp (self-built app) here")
        if params.get("appid") != self.corp_id:
            raise LoginRefusedError("appid is not this corp's CorpID")
        agentid = params.get("agentid", "")
        if not agentid.isdigit():
            raise LoginRefusedError("agentid is required for CorpApp")
        expected = self._agent_id()
        if expected is not None and int(agentid) != expected:
            raise LoginRefusedError("agentid is not an app of this corp")
        target = urlsplit(params.get("redirect_uri", ""))
        if target.scheme not in ("http", "https") or not target.netloc:
            raise LoginRefusedError("redirect_uri must be an absolute http(s) URL")
        if target.hostname != self.trusted_domain:
            raise LoginRefusedError(f"50001 redirect_uri is not on the app's trusted domain {self.trusted_domain}")
        if len(params.get("state", "").encode()) > MAX_STATE_BYTES:
            raise LoginRefusedError("state is longer than 128 bytes")

    def issue(self, userid: str, params: Mapping[str, str]) -> str:
        """The redirect a confirmed login gets: `redirect_uri` with a fresh code and the state."""
        self.check_request(params)
        if userid not in self.members and userid not in self.outsiders:
            raise LoginRefusedError("nobody of that name scanned the code")
        code = secrets.token_urlsafe(48)
        now = time.monotonic()
        with self._lock:
            self._codes = {c: i for c, i in self._codes.items() if i.expires_at > now}
            self._codes[code] = IssuedCode(userid, now + self.code_ttl_s, member=userid in self.members)
        target = params["redirect_uri"]
        query = urlencode({"code": code, "state": params.get("state", "")})
        return f"{target}{'&' if urlsplit(target).query else '?'}{query}"

    def redeem(self, code: str) -> IssuedCode | None:
        """Whom a live code was issued to; the code is spent either way."""
        with self._lock:
            issued = self._codes.pop(code, None)
        if issued is None or issued.expires_at <= time.monotonic():
            return None
        return issued

    # -- HTTP ---------------------------------------------------------------------------------------

    def routes(self, check_token: Callable[[str | None], int], error_body: Callable[[int], object]) -> list[Route]:
        async def login_page(request: Request) -> Response:
            params = {k: request.query_params.get(k, "") for k in LOGIN_FIELDS}
            try:
                self.check_request(params)
            except LoginRefusedError as exc:
                return _page("登录失败 Login refused", f"<p role='alert'>{html.escape(str(exc))}</p>", 400)
            hidden = "".join(
                f"<input type='hidden' name='{k}' value='{html.escape(v, quote=True)}'>" for k, v in params.items()
            )
            buttons = "".join(
                f"<button type='submit' name='userid' value='{html.escape(u, quote=True)}'>"
                f"{html.escape(name)} ({html.escape(u)})</button> "
                for u, name in (*self.members.items(), *self.outsiders.items())
            )
            body = (
                "<p>Fake WeCom: choose who scans the QR code.</p>"
                f"<form method='post' action='/wwlogin/sso/confirm'>{hidden}{buttons}</form>"
            )
            return _page("企业微信登录 (fake)", body)

        async def confirm(request: Request) -> Response:
            async with request.form(max_files=0, max_fields=16) as form:
                fields = {k: str(form.get(k, "")) for k in (*LOGIN_FIELDS, "userid")}
            try:
                target = self.issue(fields.pop("userid"), fields)
            except LoginRefusedError as exc:
                return _page("登录失败 Login refused", f"<p role='alert'>{html.escape(str(exc))}</p>", 400)
            return RedirectResponse(target, status_code=302)

        async def getuserinfo(request: Request) -> Response:
            if errcode := check_token(request.query_params.get("access_token")):
                return JSONResponse(error_body(errcode))
            code = request.query_params.get("code", "")
            if not code:
                return JSONResponse(error_body(41008))
            issued = self.redeem(code)
            if issued is None:
                return JSONResponse(error_body(40029))
            if not issued.member:  # someone outside the corp: who they are to WeChat, no userid
                token = hashlib.sha256(f"{self.corp_id}:{issued.userid}".encode()).hexdigest()
                return JSONResponse(
                    {"errcode": 0, "errmsg": "ok", "openid": f"o{token[:27]}", "external_userid": f"wm{token[:30]}"}
                )
            return JSONResponse({"errcode": 0, "errmsg": "ok", "userid": issued.userid})

        async def expire(_: Request) -> Response:
            self.expire_codes()
            return JSONResponse({"expired": True})

        return [
            Route("/wwlogin/sso/login", login_page, methods=["GET"]),
            Route("/wwlogin/sso/confirm", confirm, methods=["POST"]),
            Route("/cgi-bin/auth/getuserinfo", getuserinfo, methods=["GET"]),
            Route("/_fake/login/expire", expire, methods=["POST"]),
        ]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html lang='zh'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status)
