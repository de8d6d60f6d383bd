"""Turning a decrypted WeCom message into a MessageReceived event (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from wxbot_common.ids import inbound_event_id, now_timestamp
from wxbot_common.media.asr import ASR_OK, ASR_STATUS
from wxbot_gateway.conversation import conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.messages import InboundMessage, dedup_key

KINDS = {
    "text": ev.MESSAGE_KIND_TEXT,
    "image": ev.MESSAGE_KIND_IMAGE,
    "voice": ev.MESSAGE_KIND_VOICE,
    "video": ev.MESSAGE_KIND_VIDEO,
    "file": ev.MESSAGE_KIND_FILE,
    "location": ev.MESSAGE_KIND_LOCATION,
    "link": ev.MESSAGE_KIND_LINK,
    "event": ev.MESSAGE_KIND_EVENT,
}


def wecom_conversation_id(corp_id: str, agent_id: str, user_id: str) -> str:
    return conversation_id("wecom", f"{corp_id}:{agent_id}", user_id)


def _address(event: ev.MessageReceived | ev.ChannelEventReceived, corp_id: str, agent: str, user: str) -> None:
    event.reply_to.corp_id = corp_id
    event.reply_to.agent_id = agent
    event.reply_to.user_id = user


def describe(msg: InboundMessage) -> str:
    """The text a message stands for: its content, or a short description of a non-text message
    (what context records and what the nlp stage may show a model); media stay referenced by id."""
    f = msg.fields
    if msg.msg_type == "text":
        return msg.content or ""
    if msg.msg_type == "location":
        label = f.get("Label", "").strip()
        return f"[location] {label} ({f.get('Location_X', '?')}, {f.get('Location_Y', '?')})".replace("  ", " ")
    if msg.msg_type == "link":
        parts = [f.get("Title", ""), f.get("Description", ""), f.get("Url", "")]
        return "[link] " + " — ".join(p for p in parts if p)
    if msg.msg_type == "voice" and f.get("Recognition"):
        return f["Recognition"]  # speech-to-text, when the platform provides it
    return f"[{msg.msg_type}]"


@dataclass(frozen=True)
class Origin:
    """Which channel and receiver a decrypted message came through."""

    channel: str  # "wecom", "wechat" (Official Account)
    enum: ev.Channel.ValueType
    corp_id: str  # CorpID, or the OA AppID
    agent_id: str  # "" for OA

    def conversation(self, user: str) -> str:
        return conversation_id(self.channel, f"{self.corp_id}:{self.agent_id}" if self.agent_id else self.corp_id, user)


def _stamp(event: ev.MessageReceived | ev.ChannelEventReceived, msg: InboundMessage, origin: Origin) -> None:
    """Id (from MsgId, or sender + CreateTime + event, so retries share it), conversation, address."""
    receiver = f"{origin.corp_id}:{origin.agent_id}" if origin.agent_id else origin.corp_id
    event.meta.event_id = inbound_event_id(origin.channel, receiver, dedup_key(msg))
    event.meta.conversation_id = origin.conversation(msg.from_user_name)
    event.meta.correlation_id = event.meta.event_id
    event.meta.channel = origin.enum
    event.meta.occurred_at.CopyFrom(now_timestamp())
    _address(event, origin.corp_id, origin.agent_id, msg.from_user_name)
    for key, value in msg.fields.items():
        event.attributes[key] = value


def channel_event(msg: InboundMessage, origin: Origin) -> ev.ChannelEventReceived:
    event = ev.ChannelEventReceived(event=msg.event or "", event_key=msg.event_key or "")
    _stamp(event, msg, origin)
    return event


def received(msg: InboundMessage, origin: Origin) -> ev.MessageReceived:
    event = ev.MessageReceived(
        provider_msg_id=msg.msg_id or "",
        kind=KINDS.get(msg.msg_type, ev.MESSAGE_KIND_UNSPECIFIED),
        text=describe(msg),
        media_id=msg.media_id or "",
    )
    _stamp(event, msg, origin)
    if msg.msg_type == "voice" and msg.fields.get("Recognition"):
        event.attributes[ASR_STATUS] = ASR_OK  # the platform's own transcript is the text
    return event


def wecom_origin(msg: InboundMessage, corp_id: str, agent_id: str) -> Origin:
    return Origin("wecom", ev.CHANNEL_WECOM_APP, corp_id, msg.agent_id or agent_id)


def channel_event_from_wecom(msg: InboundMessage, corp_id: str, agent_id: str) -> ev.ChannelEventReceived:
    return channel_event(msg, wecom_origin(msg, corp_id, agent_id))


def received_from_wecom(msg: InboundMessage, corp_id: str, agent_id: str) -> ev.MessageReceived:
    return received(msg, wecom_origin(msg, corp_id, agent_id))
