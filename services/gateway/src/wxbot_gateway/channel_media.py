"""The media steps a WeCom app or Official Account message goes through before it is published:
a voice is transcribed (voice.py), an image fetched and stored (images.py), each with the
channel's own API client (`media/get` with its token).

A retry of a message already published (its Redis record, dedupe.py) is neither downloaded nor
transcribed again: its publish is dropped as a duplicate anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.images import ImageIntake
from wxbot_gateway.voice import VoiceIntake
from wxbot_gateway.wecom_api import WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev


@dataclass(frozen=True)
class ChannelMedia:
    client: WeComClient
    voice: VoiceIntake | None = None
    images: ImageIntake | None = None

    async def fill(self, event: Message, seen: SeenMessages) -> None:
        """Put the transcript or the stored image into `event` (never raises)."""
        if not isinstance(event, ev.MessageReceived):
            return
        voice = self.voice is not None and self.voice.wanted(event)
        image = self.images is not None and self.images.wanted(event)
        if not (voice or image) or await seen.seen(event.meta.event_id):
            return
        if voice and self.voice is not None:
            await self.voice.fill(event)
        elif image and self.images is not None:
            await self.images.fill(
                event, self.images.from_media(self.client, event.media_id, event.attributes.get("PicUrl", ""))
            )
