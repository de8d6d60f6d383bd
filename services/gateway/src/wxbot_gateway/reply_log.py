"""Whether the event log already records a reply as sent or given up.

The outbox asks this about a reply that has been first in its conversation's queue for seconds:
normally it is still being sent, but if Redis lost its removal (a crash of the machine under
`appendfsync everysec`) the log shows it done, and the outbox takes it out. One direct get per
outcome kind, on the conversation's own subject: only in that rare case, never per reply.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind, meta_of


class ReplyLog:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def is_done(self, conversation_id: str, event_id: str, position: int) -> bool:
        """The reply (`event_id`, answering the message at `position`) was sent or given up: the
        conversation's last ReplySent or ReplyFailed answers it, or a later message (replies go in
        order, so a later one recorded means this one went before it or was given up). A reply that
        answers no message (position 0: a reminder firing) counts only when the log names it."""
        for kind in (EventKind.SENT, EventKind.FAILED):
            try:
                raw = await self._js.get_last_msg(EVENTS_STREAM, kind.subject(conversation_id), direct=True)
            except NotFoundError:
                continue
            if raw.data is None:
                continue
            meta = meta_of(kind.decode(raw.data))
            if meta.causation_id == event_id or (position > 0 and meta.origin_sequence >= position):
                return True
        return False
