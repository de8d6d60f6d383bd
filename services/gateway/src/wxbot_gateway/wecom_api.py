"""The WeCom server API the gateway calls: gettoken and message/send.

The access token lives in Redis so every replica shares one token per app; refreshes are
single-flight per process and only replace the token that failed. Branching is on `errcode`
only (its `errmsg` text changes).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.logs import get_logger

TOKEN_EXPIRED = {40014, 42001}  # invalid / expired access_token: refresh once, retry once
RETRY_LATER = {-1, 45009, 45033}  # busy, frequency limit, concurrency limit
BAD_SECRET = 40001
_DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class WeComApiError(Exception):
    """WeCom answered with an errcode that retrying will not fix."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"errcode {errcode}: {errmsg}")
        self.errcode = errcode


class WeComClient:
    def __init__(
        self, http: httpx.AsyncClient, redis: Redis, base_url: str, corp_id: str, secret: str, agent_id: str
    ) -> None:
        self._http = http
        self._redis = redis
        self._base = base_url.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret
        self._agent_id = int(agent_id) if agent_id.isdigit() else 0
        self._key = f"wxbot:gateway:token:{corp_id}:{agent_id}"
        self._lock = asyncio.Lock()
        self._log = get_logger("wxbot.gateway.wecom")

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self._http.request(method, f"{self._base}{path}", **kwargs)
            data: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TransientError(f"WeCom {path} unreachable: {exc!r}") from exc
        return data

    async def token(self) -> str:
        cached = await self._redis.get(self._key)
        if cached:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
        async with self._lock:
            cached = await self._redis.get(self._key)
            if cached:
                return cached.decode() if isinstance(cached, bytes) else str(cached)
            data = await self._call(
                "GET", "/cgi-bin/gettoken", params={"corpid": self._corp_id, "corpsecret": self._secret}
            )
            errcode = int(data.get("errcode", 0))
            if errcode in RETRY_LATER:
                raise TransientError(f"gettoken errcode {errcode}", delay_s=5.0)
            if errcode != 0 or not data.get("access_token"):
                if errcode == BAD_SECRET:
                    self._log.error("wecom_bad_secret", hint="WECOM_SECRET is wrong; not retrying")
                raise WeComApiError(errcode, str(data.get("errmsg", "")))
            token = str(data["access_token"])
            ttl = max(60, int(data.get("expires_in", 7200)) - 300)  # refresh ahead of expiry
            await self._redis.set(self._key, token, ex=ttl)
            return token

    async def _drop_token(self, token: str) -> None:
        await self._redis.eval(_DELETE_IF_EQUAL, 1, self._key, token)

    async def send_part(self, user_id: str, content: str) -> str:
        """Send one text (≤ 2048 bytes) to one member; its msgid."""
        body = {"touser": user_id, "msgtype": "text", "agentid": self._agent_id, "text": {"content": content}}
        return await self._send(body)

    async def _send(self, body: dict[str, Any]) -> str:
        for attempt in (1, 2):
            token = await self.token()
            data = await self._call("POST", "/cgi-bin/message/send", params={"access_token": token}, json=body)
            errcode = int(data.get("errcode", 0))
            if errcode == 0:
                return str(data.get("msgid", ""))
            if errcode in TOKEN_EXPIRED and attempt == 1:
                await self._drop_token(token)
                continue
            if errcode in RETRY_LATER:
                raise TransientError(f"message/send errcode {errcode}", delay_s=2.0 if errcode == -1 else 10.0)
            raise WeComApiError(errcode, str(data.get("errmsg", "")))
        raise WeComApiError(42001, "token still rejected after a refresh")
