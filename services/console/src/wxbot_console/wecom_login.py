"""WeCom web login (企业微信Web登录) for the console: the redirect and the code exchange.

wecom-media-oauth-cards.md §4.1/§4.3: the browser goes to `{WECOM_LOGIN_BASE}/wwlogin/sso/login`
with `login_type=CorpApp`, `appid` (CorpID), `agentid`, `redirect_uri` and `state`; WeCom sends it
back with a `code` that works once within five minutes; `cgi-bin/auth/getuserinfo` turns the code
into the member's `userid` (errcode 40029: invalid code; a non-member gets `openid` instead).
Logins are rare, so each exchange fetches its own access token rather than sharing the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from wxbot_common.http_client import HttpError, TracedHttp

INVALID_CODE = 40029


class LoginFailedError(Exception):
    """The code could not be turned into a member; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class WeComApp:
    corp_id: str
    agent_id: str
    secret: str
    api_base: str
    login_base: str


class WeComLogin:
    def __init__(self, app: WeComApp, http: TracedHttp, timeout_s: float = 10.0) -> None:
        self._app = app
        self._http = http
        self._timeout_s = timeout_s

    def authorize_url(self, redirect_uri: str, state: str, lang: str = "zh") -> str:
        query = urlencode(
            {
                "login_type": "CorpApp",
                "appid": self._app.corp_id,
                "agentid": self._app.agent_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "lang": lang,
            }
        )
        return f"{self._app.login_base.rstrip('/')}/wwlogin/sso/login?{query}"

    async def member_of(self, code: str) -> str:
        """The UserID the single-use `code` was issued to; LoginFailedError otherwise."""
        token = await self._token()
        body = await self._get("/cgi-bin/auth/getuserinfo", {"access_token": token, "code": code})
        errcode = body.get("errcode", -1)
        if errcode == INVALID_CODE:
            raise LoginFailedError("the login code is invalid, used or expired: log in again")
        if errcode != 0:
            raise LoginFailedError(f"WeCom refused the login (errcode {errcode})")
        userid = body.get("userid")
        if not isinstance(userid, str) or not userid:
            raise LoginFailedError("not a member of this corp")
        return userid

    async def _token(self) -> str:
        body = await self._get("/cgi-bin/gettoken", {"corpid": self._app.corp_id, "corpsecret": self._app.secret})
        token = body.get("access_token")
        if body.get("errcode", 0) != 0 or not isinstance(token, str):
            raise LoginFailedError(f"WeCom refused the app's credentials (errcode {body.get('errcode')})")
        return token

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self._app.api_base.rstrip('/')}{path}"
        try:
            async with self._http.request("GET", url, params=params, timeout_s=self._timeout_s) as resp:
                body = await resp.json(content_type=None)
        except (*HttpError, ValueError) as exc:
            raise LoginFailedError(f"WeCom could not be reached ({type(exc).__name__})") from exc
        if not isinstance(body, dict):
            raise LoginFailedError("WeCom answered something that is not JSON")
        return body
