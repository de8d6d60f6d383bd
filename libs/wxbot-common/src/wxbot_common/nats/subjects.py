"""Subject grammar of the event log: `wxbot.evt.<entity>.<event>.<conversation key>`.

Each event kind maps to exactly one protobuf message type; consumers filter by subject on the
server, never by payload. The conversation key is a hash: no personal data in subjects.
"""

from __future__ import annotations

import enum

from google.protobuf.message import DecodeError, Message

from wxbot_common.errors import PermanentError
from wxbot_common.ids import conversation_key
from wxbot_proto.events.v1 import events_pb2 as ev

EVENTS_STREAM = "WXBOT_EVENTS"
EVENTS_SUBJECTS = "wxbot.evt.>"
DLQ_STREAM = "WXBOT_DLQ"
DLQ_PREFIX = "wxbot.dlq"
MEDIA_BUCKET = "WXBOT_MEDIA"  # object store of voice and image files (stream OBJ_WXBOT_MEDIA)

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EVENT_TYPE = "Wxbot-Event-Type"


class EventKind(enum.Enum):
    """Every kind of event in the log, with its subject tokens and message type."""

    RECEIVED = ("inbound", "received", ev.MessageReceived)
    ACCEPTED = ("inbound", "accepted", ev.InboundAccepted)
    INBOUND_BLOCKED = ("inbound", "blocked", ev.InboundBlocked)
    DRAFTED = ("reply", "drafted", ev.ReplyDrafted)
    APPROVED = ("reply", "approved", ev.ReplyApproved)
    REPLY_BLOCKED = ("reply", "blocked", ev.ReplyBlocked)
    SENT = ("reply", "sent", ev.ReplySent)
    FAILED = ("reply", "failed", ev.ReplyFailed)
    RESET = ("conversation", "reset", ev.ConversationReset)
    CHANNEL_EVENT = ("channel", "event", ev.ChannelEventReceived)
    FEEDBACK = ("feedback", "given", ev.FeedbackGiven)
    OPERATOR_ACTION = ("operator", "action", ev.OperatorAction)

    def __init__(self, entity: str, event: str, message_type: type[Message]) -> None:
        self.entity = entity
        self.event = event
        self.message_type = message_type

    @property
    def prefix(self) -> str:
        return f"wxbot.evt.{self.entity}.{self.event}"

    @property
    def wildcard(self) -> str:
        """Filter subject matching every conversation's events of this kind."""
        return f"{self.prefix}.*"

    @property
    def template(self) -> str:
        """Low-cardinality name for spans and metrics."""
        return f"{self.prefix}.{{conversation}}"

    def subject(self, conversation_id: str) -> str:
        return f"{self.prefix}.{conversation_key(conversation_id)}"

    def decode(self, data: bytes) -> Message:
        message = self.message_type()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise PermanentError(f"undecodable {self.message_type.DESCRIPTOR.full_name}: {exc}") from exc
        return message

    @classmethod
    def from_subject(cls, subject: str) -> EventKind:
        parts = subject.split(".")
        if len(parts) != 5 or parts[0] != "wxbot" or parts[1] != "evt":
            raise PermanentError(f"not an event subject: {subject!r}")
        kind = _BY_TOKENS.get((parts[2], parts[3]))
        if kind is None:
            raise PermanentError(f"unknown event kind in subject {subject!r}")
        return kind

    @classmethod
    def of(cls, message: Message) -> EventKind:
        """The kind that carries a message type (each type belongs to exactly one kind)."""
        kind = _BY_TYPE.get(message.DESCRIPTOR.full_name)
        if kind is None:
            raise TypeError(f"{message.DESCRIPTOR.full_name} is not an event of the log")
        return kind


_BY_TOKENS = {(k.entity, k.event): k for k in EventKind}
_BY_TYPE = {k.message_type.DESCRIPTOR.full_name: k for k in EventKind}


def meta_of(event: Message) -> ev.EventMeta:
    """The EventMeta every event message carries in its `meta` field."""
    meta = getattr(event, "meta", None)
    if not isinstance(meta, ev.EventMeta):
        raise TypeError(f"{event.DESCRIPTOR.full_name} has no EventMeta")
    return meta


def dlq_subject(durable: str) -> str:
    return f"{DLQ_PREFIX}.{durable}"
