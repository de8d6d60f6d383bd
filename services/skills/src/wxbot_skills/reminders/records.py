"""A reminder as it is stored: the body of its schedule message, and so of every message it fires.

It carries all a firing needs to reach the user through the normal pipeline (the conversation,
the channel, the opaque reply address), so nothing else has to be looked up when it fires.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from wxbot_common.ids import WXBOT_NAMESPACE
from wxbot_common.skill_contract import CallContext, channel_number
from wxbot_skills.reminders.rules import Repeat, Rule

ID_PATTERN = r"^[a-z0-9]{1,16}$"  # subject-safe: an id never holds a NATS wildcard


def owner_key(caller: CallContext) -> str:
    """Whose reminders these are: the user in its channel and corp (hashed: subjects hold no ids)."""
    address = caller.reply_address()
    corp = address.corp_id if address is not None else ""
    return hashlib.sha256(f"{caller.channel}\0{corp}\0{caller.user_id}".encode()).hexdigest()[:20]


def reminder_id(owner: str, caller: CallContext, *what: object) -> str:
    """Short and, for a call caused by a user's message, the same when that message is answered
    again (nlp redelivered it): the reminder is then replaced, not doubled."""
    if not caller.message_id:
        return uuid.uuid4().hex[:8]
    return uuid.uuid5(WXBOT_NAMESPACE, f"reminder/{owner}/{caller.message_id}/{what!r}").hex[:8]


class Reminder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    id: str
    owner: str
    text: str
    repeat: Repeat = "none"
    at: datetime | None = None
    every_s: int | None = None
    since: datetime
    time_zone: str
    conversation_id: str
    channel: str
    reply_to: str
    message_id: str = ""

    @classmethod
    def create(cls, rid: str, owner: str, text: str, rule: Rule, zone: str, caller: CallContext) -> Reminder:
        return cls(
            id=rid,
            owner=owner,
            text=text,
            repeat=rule.repeat,
            at=rule.at,
            every_s=int(rule.every.total_seconds()) if rule.every is not None else None,
            since=rule.since,
            time_zone=zone,
            conversation_id=caller.conversation_id,
            channel=caller.channel,
            reply_to=caller.reply_to,
            message_id=caller.message_id,
        )

    @property
    def rule(self) -> Rule:
        every = timedelta(seconds=self.every_s) if self.every_s is not None else None
        return Rule(self.repeat, self.at, every, self.since)

    @property
    def channel_number(self) -> int:
        return channel_number(self.channel)

    def caller(self) -> CallContext:
        """The context it was created in: where its firings go."""
        return CallContext(self.conversation_id, "", self.channel, self.message_id, self.reply_to)
