"""Fake WeChat Official Account API: `cgi-bin/token` (client_credential), the customer-service
`cgi-bin/message/custom/send` (text, image, voice) and temporary media (`media/upload`, `media/get`
with the OA's own limits and answer), with the same fault knobs and inspection as the fake WeCom."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_devkit.fakes.media_library import OA_UPLOADS, StoredMedia, UploadPolicy
from wxbot_devkit.fakes.wecom import MAX_CONTENT_BYTES, FakeWeCom, SentMessage, error_body

OA_MEDIA_MSGTYPES = frozenset({"image", "voice"})


class FakeOfficialAccount(FakeWeCom):
    """`corp_id`/`corp_secret` hold the AppID and AppSecret; sent messages have agentid 0."""

    upload_policy: UploadPolicy = OA_UPLOADS

    async def _token(self, request: Request) -> Response:
        with self._lock:
            self.gettoken_calls += 1
        await self._delay()
        if (fault := self._pop(self._gettoken_faults)) is not None:
            return JSONResponse(error_body(fault))
        if request.query_params.get("grant_type") != "client_credential":
            return JSONResponse(error_body(40002))
        if request.query_params.get("appid") != self.corp_id:
            return JSONResponse(error_body(40013))
        if request.query_params.get("secret") != self.corp_secret:
            return JSONResponse(error_body(40125))
        return self._issue_token()

    def _token_error(self, errcode: int) -> int:
        return 40001 if errcode == 42001 else errcode

    def _upload_answer(self, stored: StoredMedia) -> dict[str, Any]:
        # The OA answers without errcode, created_at as a number.
        return {"type": stored.media_type, "media_id": stored.media_id, "created_at": int(stored.created_at)}

    def _validate_send(self, body: object) -> tuple[int, SentMessage | None]:
        if not isinstance(body, dict):
            return 40008, None
        msgtype = body.get("msgtype")
        if msgtype in OA_MEDIA_MSGTYPES:
            touser = body.get("touser")
            if not isinstance(touser, str) or not touser:
                return 40003, None
            errcode, media_id = self._check_media_section(msgtype, body.get(msgtype))
            if errcode:
                return errcode, None
            return 0, SentMessage(touser, msgtype, "", 0, time.time(), secrets.token_hex(16), media_id)
        if msgtype != "text":
            return 40008, None
        touser, text = body.get("touser"), body.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        if not isinstance(touser, str) or not touser:
            return 40003, None
        if not isinstance(content, str) or not content:
            return 44004, None
        if len(content.encode()) > MAX_CONTENT_BYTES:
            return 45002, None
        return 0, SentMessage(touser, "text", content, 0, time.time(), secrets.token_hex(16))

    async def _custom_send(self, request: Request) -> Response:
        with self._lock:
            self.send_calls += 1
        await self._delay()
        if (fault := self._pop(self._send_faults)) is not None:
            return JSONResponse(error_body(fault))
        if errcode := self._check_token(request.query_params.get("access_token")):
            return JSONResponse(error_body(self._token_error(errcode)))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_body(47001))
        errcode, message = self._validate_send(body)
        if message is None:
            return JSONResponse(error_body(errcode))
        with self._lock:
            self._messages.append(message)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    def build_app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/cgi-bin/token", self._token, methods=["GET"]),
                Route("/cgi-bin/message/custom/send", self._custom_send, methods=["POST"]),
                *self._media_routes(),
                Route("/_fake/messages", self._ctl_messages, methods=["GET"]),
                Route("/_fake/faults", self._ctl_faults, methods=["POST"]),
                Route("/_fake/reset", self._ctl_reset, methods=["POST"]),
                Route("/_fake/stats", self._ctl_stats, methods=["GET"]),
            ]
        )
