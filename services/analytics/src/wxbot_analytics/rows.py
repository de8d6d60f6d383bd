"""One event of the log → one row of the read model (pure, so live projection and rebuild agree).

Personal data stays out: users and conversations are stored as HMAC-SHA256 hashes under a
secret key (a plain hash of a WeCom user id could be reversed by trying the directory's ids);
text is kept only when ANALYTICS_STORE_TEXT=true. Whether a message tells the bot that its
previous answer was wrong is decided here, from the text, and kept as a flag whatever the text
setting: the reports attribute it to that answer (docs/analytics.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

from google.protobuf.message import Message

from wxbot_analytics.store import Row
from wxbot_common.nats.subjects import EventKind, meta_of
from wxbot_proto.events.v1 import events_pb2 as ev

SOURCES = {
    ev.REPLY_SOURCE_LLM: "llm",
    ev.REPLY_SOURCE_KNOWLEDGE_BASE: "knowledge_base",
    ev.REPLY_SOURCE_COMMAND: "command",
    ev.REPLY_SOURCE_NOTICE: "notice",
    ev.REPLY_SOURCE_CACHE: "cache",
    ev.REPLY_SOURCE_SKILL: "skill",
}
CHANNELS = {
    ev.CHANNEL_WECOM_APP: "wecom_app",
    ev.CHANNEL_OFFICIAL_ACCOUNT: "official_account",
    ev.CHANNEL_WECOM_AIBOT: "wecom_aibot",
    ev.CHANNEL_WEBSOCKET: "websocket",
    ev.CHANNEL_PLAYGROUND: "playground",
}
MSG_KINDS = {v.number: v.name.removeprefix("MESSAGE_KIND_").lower() for v in ev.MessageKind.DESCRIPTOR.values}
RATINGS = {ev.FEEDBACK_RATING_POSITIVE: 1, ev.FEEDBACK_RATING_NEGATIVE: -1}
FEEDBACK_KINDS = {ev.FEEDBACK_KIND_EXPLICIT: "explicit", ev.FEEDBACK_KIND_IMPLICIT: "implicit"}

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
QUESTION_MAX = 200  # characters of a normalised question kept


def normalise(text: str) -> str:
    """Fold width and case, drop punctuation and spacing: 'Hello, World！' == 'hello world'."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", folded).split())[:QUESTION_MAX]


@dataclass(frozen=True)
class RowRules:
    """What the projection needs besides the event itself."""

    hash_key: bytes
    store_text: bool
    negative_phrases: frozenset[str]

    @classmethod
    def of(cls, hash_key: str, store_text: bool, phrases: list[str]) -> RowRules:
        return cls(hash_key.encode(), store_text, frozenset(normalise(p) for p in phrases if normalise(p)))

    def hash(self, value: str) -> str:
        if not value:
            return ""
        return hmac.new(self.hash_key, value.encode(), hashlib.sha256).hexdigest()[:24]

    def user(self, channel: int, address: ev.ReplyAddress) -> str:
        if not address.user_id:
            return ""
        return self.hash(f"{channel}:{address.corp_id}:{address.user_id}")

    def says_wrong(self, text: str) -> bool:
        """A short message that is one of the phrases ("不对", "wrong!", "不是这样。")."""
        return normalise(text) in self.negative_phrases


def to_row(kind: EventKind, event: Message, seq: int, rules: RowRules) -> Row:
    """The row of one event (every column set, so inserts are uniform)."""
    meta = meta_of(event)
    at = meta.occurred_at.seconds + meta.occurred_at.nanos / 1e9
    row: Row = {
        "event_id": meta.event_id,
        "kind": kind.name.lower(),
        "seq": seq,
        "at": round(at, 3),
        "conversation": rules.hash(meta.conversation_id),
        "user": "",
        "correlation_id": meta.correlation_id or meta.event_id,
        "causation_id": meta.causation_id,
        "channel": CHANNELS.get(meta.channel, ""),
        "msg_kind": "",
        "source": "",
        "model": "",
        "variant": "",
        "tokens_in": 0,
        "tokens_out": 0,
        "reason": "",
        "rating": 0,
        "feedback_kind": "",
        "task_id": "",
        "implicit_negative": 0,
        "errcode": 0,
        "text": "",
        "question": "",
    }
    address = getattr(event, "reply_to", None)
    if isinstance(address, ev.ReplyAddress):
        row["user"] = rules.user(meta.channel, address)
    if isinstance(event, ev.MessageReceived):
        row["msg_kind"] = MSG_KINDS.get(event.kind, "")
        if event.kind == ev.MESSAGE_KIND_TEXT:
            row["implicit_negative"] = int(rules.says_wrong(event.text))
            if rules.store_text:
                row["text"] = event.text
                row["question"] = normalise(event.text)
    elif isinstance(event, ev.ReplyDrafted):
        row.update(
            source=SOURCES.get(event.source, ""),
            model=event.model,
            variant=event.variant,
            tokens_in=event.prompt_tokens,
            tokens_out=event.completion_tokens,
        )
        if rules.store_text:
            row["text"] = event.text
    elif isinstance(event, ev.ReplyApproved):
        row["source"] = SOURCES.get(event.source, "")
    elif isinstance(event, ev.InboundBlocked | ev.ReplyBlocked):
        row["reason"] = event.reason
    elif isinstance(event, ev.ReplyFailed):
        row["errcode"] = event.errcode
        row["reason"] = "retryable" if event.retryable else "permanent"
    elif isinstance(event, ev.ChannelEventReceived):
        row["reason"] = event.event
    elif isinstance(event, ev.FeedbackGiven):
        row.update(
            rating=RATINGS.get(event.rating, 0),
            feedback_kind=FEEDBACK_KINDS.get(event.kind, ""),
            task_id=event.task_id,
            causation_id=event.reply_event_id or meta.causation_id,
        )
    return row
