"""How a reply reaches a user on one channel: split into parts, then send each part.

Delivery (`wxbot_gateway.delivery`) is channel-agnostic: it claims each part once in Redis and
asks the channel's sender to send it. A new channel is one `ReplySender` registered in the
composition root.
"""

from __future__ import annotations

from typing import Protocol

from wxbot_gateway.text_split import split_utf8
from wxbot_gateway.wecom_api import WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev


class ReplySender(Protocol):
    """One channel's outbound side. Raise TransientError to retry later, WeComApiError-like errors to fail."""

    name: str  # metric label

    def split(self, text: str) -> list[str]:
        """The ordered parts `text` is sent as (each within the channel's size limit)."""
        ...

    async def send_part(self, address: ev.ReplyAddress, part: str) -> str:
        """Send one part; the provider's message id ("" when it has none)."""
        ...


class WeComAppSender:
    """WeCom self-built app (`message/send`) or Official Account (`message/custom/send`): parts of ≤ 2048 bytes."""

    name = "wecom"

    def __init__(self, client: WeComClient, msgtype: str = "text", name: str = "wecom") -> None:
        self._client = client
        self._msgtype = msgtype
        self.name = name  # the Official Account uses the same client with its own API flavour

    def split(self, text: str) -> list[str]:
        return split_utf8(text)

    async def send_part(self, address: ev.ReplyAddress, part: str) -> str:
        return await self._client.send_part(address.user_id, part, self._msgtype)

    # A `media_send.MediaChannel`: images and voice go as uploads and media messages.

    @property
    def media_scope(self) -> str:
        return self._client.scope

    async def upload_media(self, media_type: str, data: bytes, filename: str, content_type: str) -> str:
        return await self._client.upload_media(media_type, data, filename, content_type)

    async def send_media(self, address: ev.ReplyAddress, msgtype: str, media_id: str) -> str:
        return await self._client.send_media(address.user_id, msgtype, media_id)
