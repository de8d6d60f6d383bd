"""The playground's channel: the browser's WebSocket relayed to the gateway's bridge (`/ws/bridge`).

The message goes in exactly as a bridge client's does, so safety, context, skills and the
exactly-once rules are the pipeline's own; the reply comes back on the bridge socket when
delivery sends it, and is passed to the page as it is. Each admin is one conversation
(`bridge:ws:user:console-<userid>`). Frames from the page: `{"content", "msg_id", "image_base64"?,
"voice_base64"?}`; to the page:
`{"type": "ack" | "reply" | "error", ...}` — text only, which the page shows as text. An image
(`image_base64`, with the text as its caption) goes in as the bridge's image frame; it must fit in
one frame (MAX_IMAGE_BYTES). A voice file (`voice_base64`, any audio ffmpeg decodes) goes in as the
bridge's voice frame, transcribed by the gateway; the same size limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.websockets import WebSocket, WebSocketDisconnect

from wxbot_common.logs import get_logger

MAX_CONTENT_BYTES = 8192  # the bridge's own limit
# An inline image must fit in one bridge frame (GATEWAY_MAX_BODY_BYTES, 64 KiB by default) as base64.
MAX_IMAGE_BYTES = 45 * 1024
SENDER_PREFIX = "console-"


def sender_of(user: str) -> str:
    return f"{SENDER_PREFIX}{user}"[:128]


@dataclass(frozen=True, slots=True)
class PageMessage:
    content: str  # the text, or an image's caption ("" for none)
    msg_id: str | None
    image_base64: str = ""
    voice_base64: str = ""


def page_frame(raw: str) -> PageMessage:
    """What the page sent, or ValueError saying what is wrong (shown on the page as it is)."""
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise ValueError("frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise ValueError("frame must be a JSON object")
    content, msg_id, image = frame.get("content", ""), frame.get("msg_id"), frame.get("image_base64", "")
    voice = frame.get("voice_base64", "")
    if not isinstance(content, str) or not isinstance(image, str) or not isinstance(voice, str):
        raise ValueError("'content', 'image_base64' and 'voice_base64' must be strings")
    if image and voice:
        raise ValueError("send an image or a voice message, not both at once")
    if not content.strip() and not image and not voice:
        raise ValueError("the message is empty")
    if len(content.encode("utf-8", errors="replace")) > MAX_CONTENT_BYTES:
        raise ValueError(f"the message is longer than {MAX_CONTENT_BYTES} bytes")
    if msg_id is not None and not (isinstance(msg_id, str) and 0 < len(msg_id) <= 100):
        raise ValueError("'msg_id' must be a short string")
    for what, data in (("image", image), ("voice message", voice)):
        if data:
            try:
                size = len(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"the {what} is not valid base64") from exc
            if size > MAX_IMAGE_BYTES:
                raise ValueError(f"the {what} is {size} bytes; at most {MAX_IMAGE_BYTES} fit in one message")
    return PageMessage(content, msg_id, image, voice)


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
                message = page_frame(raw)
            except ValueError as exc:
                await page.send_json({"type": "error", "error": str(exc)})
                continue
            frame: dict[str, Any] = {"sender": sender, "content": message.content, "msg_type": "text"}
            if message.image_base64:
                frame.update(msg_type="image", image_base64=message.image_base64)
            elif message.voice_base64:
                frame.update(msg_type="voice", voice_base64=message.voice_base64)
            if message.msg_id:
                frame["msg_id"] = message.msg_id
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
