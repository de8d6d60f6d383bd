"""The WeCom server API the gateway calls: gettoken, message/send, media/upload and media/get.

The access token lives in Redis so every replica shares one token per app (and each replica
keeps it in memory for up to `LOCAL_TOKEN_S`, so a send costs no Redis round trip). Refreshing is
single-flight across replicas: a short Redis lock lets one replica call `gettoken` while the
others wait for the token to appear; a rejected token is dropped only if it is still the stored
one. What each errcode means — refresh, retry later, or give up — is decided in `errcodes`
alone; branching is on `errcode` only (its `errmsg` text changes). A configuration error at
`gettoken` (e.g. 40001, a wrong secret) is remembered for a while so that messages fail fast
instead of hammering `gettoken` (repeated wrong secrets get the source IP blocked).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.logs import get_logger
from wxbot_gateway.errcodes import Outcome, classify
from wxbot_gateway.errors import DeliveryRefusedError, RetryLaterError

REFRESH_AHEAD_S = 300  # a token is replaced this long before WeCom says it expires
LOCK_TTL_MS = 10_000
LOCAL_TOKEN_S = 30.0  # how long a replica reuses the token it read from Redis without asking again
CONFIG_ERROR_HOLD_S = 60  # how long a rejected secret fails messages without asking again
_DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class WeComApiError(DeliveryRefusedError):
    """WeCom answered with an errcode that retrying will not fix."""

    def __init__(self, errcode: int, errmsg: str, reason: str = "") -> None:
        super().__init__(errcode, f"errcode {errcode}: {reason or errmsg}" + (f" ({errmsg})" if reason else ""))
        self.reason = reason or errmsg


@dataclass(frozen=True)
class ApiFlavour:
    """Where the WeCom and the Official Account APIs differ (same token discipline; the meaning of
    their errcodes is `errcodes.classify(name, errcode)`)."""

    name: str
    token_path: str
    id_param: str
    secret_param: str
    extra_token_params: tuple[tuple[str, str], ...]
    send_path: str
    with_agent: bool


WECOM = ApiFlavour("wecom", "/cgi-bin/gettoken", "corpid", "corpsecret", (), "/cgi-bin/message/send", True)
OFFICIAL_ACCOUNT = ApiFlavour(
    "wechat",
    "/cgi-bin/token",
    "appid",
    "secret",
    (("grant_type", "client_credential"),),
    "/cgi-bin/message/custom/send",
    False,
)


class MediaTooLargeError(Exception):
    """A download larger than the caller takes (known from Content-Length, or counted)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"media of {size}+ bytes, over the limit of {limit}")
        self.size, self.limit = size, limit


@dataclass(frozen=True, slots=True)
class Media:
    data: bytes
    content_type: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    content_type: str
    disposition: str
    content: bytes


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_error(resp: ApiResponse) -> tuple[int, str] | None:
    """(errcode, errmsg) when a download answered a JSON error instead of the file (WeCom uses HTTP 200)."""
    head = resp.content[:1024].lstrip()
    if "json" not in resp.content_type and not head.startswith(b'{"errcode"'):
        return None
    try:
        data = json.loads(resp.content)
        return int(data.get("errcode", -1)), str(data.get("errmsg", ""))
    except (ValueError, AttributeError, TypeError):
        return -1, f"unreadable error body ({len(resp.content)} bytes)"


class WeComClient:
    def __init__(
        self,
        http: TracedHttp,
        redis: Redis,
        base_url: str,
        corp_id: str,
        secret: str,
        agent_id: str,
        on_config_error: Callable[[int, str], None] | None = None,
        flavour: ApiFlavour = WECOM,
    ) -> None:
        self._flavour = flavour
        self._http = http
        self._redis = redis
        self._base = base_url.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret
        self._agent_id = int(agent_id) if agent_id.isdigit() else 0
        self.scope = f"{flavour.name}:{corp_id}:{agent_id}"  # whose tokens and media ids these are
        self._key = f"wxbot:gateway:token:{corp_id}:{agent_id}"
        self._lock_key = f"{self._key}:lock"
        self._error_key = f"{self._key}:config-error"
        self._local = asyncio.Lock()
        self._cached: tuple[str, float] | None = None  # (token, monotonic time until which it is reused)
        self._on_config_error = on_config_error
        self._log = get_logger("wxbot.gateway.wecom")

    async def _call(self, method: str, path: str, max_bytes: int | None = None, **kwargs: Any) -> ApiResponse:
        """One API call; with `max_bytes`, a larger body (by its Content-Length, else counted while
        reading) raises `MediaTooLargeError` and is not read further."""
        try:
            async with self._http.request(method, f"{self._base}{path}", **kwargs) as resp:
                if max_bytes is None:
                    content = await resp.read()
                else:
                    if (resp.content_length or 0) > max_bytes:
                        raise MediaTooLargeError(resp.content_length or 0, max_bytes)
                    buffer = bytearray()
                    async for chunk in resp.content.iter_any():
                        buffer += chunk
                        if len(buffer) > max_bytes:
                            raise MediaTooLargeError(len(buffer), max_bytes)
                    content = bytes(buffer)
                return ApiResponse(
                    resp.status,
                    resp.headers.get("content-type", ""),
                    resp.headers.get("content-disposition", ""),
                    content,
                )
        except HttpError as exc:
            raise TransientError(f"WeCom {path} unreachable: {exc!r}") from exc

    async def _call_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = await self._call(method, path, **kwargs)
        if resp.status != 200:  # the API answers every errcode with 200: this is a proxy or an outage
            raise TransientError(f"WeCom {path} answered HTTP {resp.status}")
        try:
            data: dict[str, Any] = json.loads(resp.content)
        except ValueError as exc:
            raise TransientError(f"WeCom {path} answered HTTP {resp.status} without JSON") from exc
        if not isinstance(data, dict):
            raise TransientError(f"WeCom {path} answered HTTP {resp.status} with JSON that is not an object")
        return data

    def _refused(self, path: str, errcode: int, errmsg: str) -> Exception:
        """The exception for an errcode that is neither success nor a rejected token: give up or retry."""
        verdict = classify(self._flavour.name, errcode)
        if verdict.outcome.gives_up:
            if verdict.outcome is Outcome.CONFIG:
                self._log.error("config_error", api=self._flavour.name, path=path, errcode=errcode, hint=verdict.reason)
                if self._on_config_error is not None:
                    self._on_config_error(errcode, verdict.reason)
            return WeComApiError(errcode, errmsg, verdict.reason)
        return RetryLaterError(errcode, f"{path} errcode {errcode}: {verdict.reason}")

    async def token(self, wait_s: float = 10.0) -> str:
        """The shared access token; at most one `gettoken` per expiry across every replica."""
        cached = self._cached
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        token = await self._shared_token(wait_s)
        self._cached = (token, time.monotonic() + LOCAL_TOKEN_S)
        return token

    async def _shared_token(self, wait_s: float) -> str:
        deadline = time.monotonic() + wait_s
        async with self._local:  # one waiter per process; the others reuse what it finds
            while True:
                cached = await self._redis.get(self._key)
                if cached:
                    return _text(cached)
                held = await self._redis.get(self._error_key)
                if held:
                    errcode = int(_text(held)) if _text(held).lstrip("-").isdigit() else 0
                    reason = classify(self._flavour.name, errcode).reason
                    raise WeComApiError(errcode, "rejected recently, not asking again yet", reason)
                owner = secrets.token_hex(8)
                if await self._redis.set(self._lock_key, owner, nx=True, px=LOCK_TTL_MS):
                    try:
                        return await self._fetch_token()
                    finally:
                        await self._redis.eval(_DELETE_IF_EQUAL, 1, self._lock_key, owner)
                if time.monotonic() > deadline:
                    raise TransientError("another replica is refreshing the WeCom token", delay_s=1.0)
                await asyncio.sleep(0.05)  # poll interval while another replica refreshes, bounded above

    async def _fetch_token(self) -> str:
        f = self._flavour
        params = {f.id_param: self._corp_id, f.secret_param: self._secret, **dict(f.extra_token_params)}
        data = await self._call_json("GET", f.token_path, params=params)
        errcode = int(data.get("errcode", 0))
        if errcode == 0 and data.get("access_token"):
            token = str(data["access_token"])
            ttl = max(60, int(data.get("expires_in", 7200)) - REFRESH_AHEAD_S)
            await self._redis.set(self._key, token, ex=ttl)
            self._log.info("wecom_token_refreshed", ttl_s=ttl)
            return token
        error = self._refused(f.token_path, errcode, str(data.get("errmsg", "")))
        if isinstance(error, WeComApiError):  # configuration: hold it rather than ask again per message
            await self._redis.set(self._error_key, str(errcode), ex=CONFIG_ERROR_HOLD_S)
        raise error

    async def _drop_token(self, token: str) -> None:
        if self._cached is not None and self._cached[0] == token:
            self._cached = None
        await self._redis.eval(_DELETE_IF_EQUAL, 1, self._key, token)

    async def send_part(self, user_id: str, content: str, msgtype: str = "text") -> str:
        """Send one text or markdown message (≤ 2048 bytes) to one member; its msgid."""
        body: dict[str, Any] = {"touser": user_id, "msgtype": msgtype, msgtype: {"content": content}}
        if self._flavour.with_agent:
            body["agentid"] = self._agent_id
        return await self._send(body)

    async def send_media(self, user_id: str, msgtype: str, media_id: str) -> str:
        """Send an uploaded image or voice (`msgtype` "image"/"voice") to one member; its msgid ("" on the OA)."""
        body: dict[str, Any] = {"touser": user_id, "msgtype": msgtype, msgtype: {"media_id": media_id}}
        if self._flavour.with_agent:
            body["agentid"] = self._agent_id
        return await self._send(body)

    async def upload_media(self, media_type: str, data: bytes, filename: str, content_type: str) -> str:
        """`media/upload?type=…` (multipart field `media`): the temporary media id (valid three days)."""
        path = "/cgi-bin/media/upload"

        def form() -> aiohttp.FormData:  # a FormData is consumed by one request: a new one per attempt
            built = aiohttp.FormData()
            built.add_field("media", data, filename=filename, content_type=content_type)
            return built

        data_json = await self._with_token(
            path,
            lambda token: self._call_json(
                "POST", path, params={"access_token": token, "type": media_type}, data=form()
            ),
        )
        media_id = data_json.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise TransientError(f"WeCom {path} answered without a media_id")
        return media_id

    async def _with_token(self, path: str, call: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """One JSON call under the shared token: a rejected token is dropped and the call made once
        more; any other errcode is refused (give up or retry later, per `errcodes`)."""
        for attempt in (1, 2):
            token = await self.token()
            data = await call(token)
            errcode = int(data.get("errcode", 0))  # the OA's media/upload answers without errcode
            if errcode == 0:
                return data
            if classify(self._flavour.name, errcode).outcome is Outcome.REFRESH_TOKEN:
                await self._drop_token(token)
                if attempt == 1:
                    continue
                # A fresh token rejected again is still a token problem (a refresh racing another
                # replica, WeCom propagating it): retry later with backoff, never drop the reply.
                raise RetryLaterError(errcode, f"{path}: token still rejected after a refresh (errcode {errcode})")
            raise self._refused(path, errcode, str(data.get("errmsg", "")))
        raise AssertionError("unreachable")

    async def _send(self, body: dict[str, Any]) -> str:
        return str((await self._post(self._flavour.send_path, body)).get("msgid", ""))

    async def send_card(self, user_id: str, card: dict[str, Any]) -> str:
        """Send an interactive template card; the response code its first update may use."""
        body = {"touser": user_id, "msgtype": "template_card", "agentid": self._agent_id, "template_card": card}
        return str((await self._post(self._flavour.send_path, body)).get("response_code", ""))

    async def update_card_button(self, user_id: str, response_code: str, replace_name: str) -> None:
        """Turn the clicked card's buttons into one disabled button saying `replace_name` (single-use code)."""
        body = {
            "userids": [user_id],
            "agentid": self._agent_id,
            "response_code": response_code,
            "button": {"replace_name": replace_name},
        }
        await self._post("/cgi-bin/message/update_template_card", body)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to a token-authenticated API; its answer (errcode 0), else the classified error."""
        return await self._with_token(
            path, lambda token: self._call_json("POST", path, params={"access_token": token}, json=body)
        )

    async def get_media(self, media_id: str, max_bytes: int | None = None) -> Media:
        """Download a temporary media file (at most `max_bytes`, else `MediaTooLargeError`); WeCom
        answers errors as JSON with HTTP 200."""
        path = "/cgi-bin/media/get"
        for attempt in (1, 2):
            token = await self.token()
            params = {"access_token": token, "media_id": media_id}
            resp = await self._call("GET", path, max_bytes, params=params)
            if resp.status != 200:
                raise TransientError(f"WeCom {path} answered HTTP {resp.status}")
            error = _json_error(resp)
            if error is None:
                disposition = resp.disposition
                filename = disposition.split("filename=", 1)[1].strip('"') if "filename=" in disposition else None
                return Media(resp.content, resp.content_type or "application/octet-stream", filename)
            errcode, errmsg = error
            if classify(self._flavour.name, errcode).outcome is Outcome.REFRESH_TOKEN:
                await self._drop_token(token)
                if attempt == 1:
                    continue
                raise RetryLaterError(errcode, f"{path}: token still rejected after a refresh (errcode {errcode})")
            raise self._refused(path, errcode, errmsg)
        raise AssertionError("unreachable")
