"""Turning a decrypted WeCom message into a MessageReceived event (pure)."""

from __future__ import annotations

from wxbot_common.ids import inbound_event_id, now_timestamp
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


def channel_event_from_wecom(msg: InboundMessage, corp_id: str, agent_id: str) -> ev.ChannelEventReceived:
    """One log entry per WeCom event; its id comes from sender + CreateTime + event (retries share it)."""
    agent = msg.agent_id or agent_id
    event = ev.ChannelEventReceived(event=msg.event or "", event_key=msg.event_key or "")
    event.meta.event_id = inbound_event_id("wecom", f"{corp_id}:{agent}", dedup_key(msg))
    event.meta.conversation_id = wecom_conversation_id(corp_id, agent, msg.from_user_name)
    event.meta.correlation_id = event.meta.event_id
    event.meta.channel = ev.CHANNEL_WECOM_APP
    event.meta.occurred_at.CopyFrom(now_timestamp())
    _address(event, corp_id, agent, msg.from_user_name)
    for key, value in msg.fields.items():
        event.attributes[key] = value
    return event


def received_from_wecom(msg: InboundMessage, corp_id: str, agent_id: str) -> ev.MessageReceived:
    """One event per WeCom message: the id comes from MsgId (events: sender+time+event)."""
    agent = msg.agent_id or agent_id
    event = ev.MessageReceived(
        provider_msg_id=msg.msg_id or "",
        kind=KINDS.get(msg.msg_type, ev.MESSAGE_KIND_UNSPECIFIED),
        text=describe(msg),
        media_id=msg.media_id or "",
    )
    event.meta.event_id = inbound_event_id("wecom", f"{corp_id}:{agent}", dedup_key(msg))
    event.meta.conversation_id = wecom_conversation_id(corp_id, agent, msg.from_user_name)
    event.meta.correlation_id = event.meta.event_id
    event.meta.channel = ev.CHANNEL_WECOM_APP
    event.meta.occurred_at.CopyFrom(now_timestamp())
    _address(event, corp_id, agent, msg.from_user_name)
    for key, value in msg.fields.items():
        event.attributes[key] = value
    if msg.event:
        event.attributes["Event"] = msg.event
    if msg.event_key:
        event.attributes["EventKey"] = msg.event_key
    return event
