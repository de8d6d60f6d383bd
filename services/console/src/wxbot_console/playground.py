"""The playground's channel: the browser's WebSocket relayed to the gateway's bridge (`/ws/bridge`).

The message goes in exactly as a bridge client's does, so safety, context, skills and the
exactly-once rules are the pipeline's own; the reply comes back on the bridge socket when
delivery sends it, and is passed to the page as it is. Each admin is one conversation
(`bridge:ws:user:console-<userid>`). Frames from the page: `{"content", "msg_id"}`; to the page:
`{"type": "ack" | "reply" | "error", ...}` — text only, which the page shows as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from starlette.websockets import WebSocket, WebSocketDisconnect

from wxbot_common.logs import get_logger

MAX_CONTENT_BYTES = 8192  # the bridge's own limit
SENDER_PREFIX = "console-"


def sender_of(user: str) -> str:
    return f"{SENDER_PREFIX}{user}"[:128]


def page_frame(raw: str) -> tuple[str, str | None]:
    """(content, msg_id) of a frame from the page, or ValueError saying what is wrong."""
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise ValueError("frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise ValueError("frame must be a JSON object")
    content, msg_id = frame.get("content"), frame.get("msg_id")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the message is empty")
    if len(content.encode("utf-8", errors="replace")) > MAX_CONTENT_BYTES:
        raise ValueError(f"the message is longer than {MAX_CONTENT_BYTES} bytes")
    if msg_id is not None and not (isinstance(msg_id, str) and 0 < len(msg_id) <= 100):
        raise ValueError("'msg_id' must be a short string")
    return content, msg_id


class Playground:
    def __init__(self, session: aiohttp.ClientSession, gateway_url: str, bridge_token: str) -> None:
        self._session = session
        self._url = gateway_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self._token = bridge_token
        self._log = get_logger("wxbot.console.playground")

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    async def relay(self, page: WebSocket, user: str) -> None:
        """Carry frames both ways until either side closes."""
        if not self.enabled:
            await page.send_json({"type": "error", "error": "the playground needs GATEWAY_BRIDGE_TOKEN"})
            await page.close(code=1011)
            return
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            bridge = await self._session.ws_connect(f"{self._url}/ws/bridge", headers=headers, heartbeat=30)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._log.warning("bridge_unreachable", error=repr(exc))
            await page.send_json({"type": "error", "error": "the gateway cannot be reached; retrying"})
            await page.close(code=1011)
            return
        async with bridge:
            down = asyncio.create_task(self._to_page(bridge, page))
            try:
                await self._to_bridge(page, bridge, sender_of(user))
            finally:
                down.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await down

    async def _to_bridge(self, page: WebSocket, bridge: aiohttp.ClientWebSocketResponse, sender: str) -> None:
        while True:
            try:
                raw = await page.receive_text()
            except (WebSocketDisconnect, KeyError, RuntimeError):
                return
            try:
                content, msg_id = page_frame(raw)
            except ValueError as exc:
                await page.send_json({"type": "error", "error": str(exc)})
                continue
            frame: dict[str, Any] = {"sender": sender, "content": content, "msg_type": "text"}
            if msg_id:
                frame["msg_id"] = msg_id
            if bridge.closed:
                return
            await bridge.send_json(frame)

    async def _to_page(self, bridge: aiohttp.ClientWebSocketResponse, page: WebSocket) -> None:
        async for msg in bridge:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            out = {k: frame[k] for k in ("type", "content", "msg_id", "error") if isinstance(frame.get(k), str)}
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await page.send_json(out)
        with contextlib.suppress(Exception):
            await page.close(code=1011)
