"""Every admin action: a structured log line and an `OperatorAction` event in the log (who, what, on what).

The event log is the record (replicated, kept `STREAM_MAX_AGE_DAYS`, read by analytics and
audits); the console's own page shows the last actions from a short Redis list.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.ids import now_timestamp
from wxbot_common.logs import get_logger
from wxbot_common.nats.publisher import EventPublisher
from wxbot_proto.events.v1 import events_pb2 as ev

RECENT_KEY = "console:audit"
RECENT_MAX = 500


@dataclass(frozen=True, slots=True)
class Recorded:
    at: str
    operator: str
    action: str
    target: str
    detail: str


class AuditLog:
    def __init__(self, publisher: EventPublisher, redis: Redis) -> None:
        self._publisher = publisher
        self._redis = redis
        self._log = get_logger("wxbot.console.audit")

    async def record(self, operator: str, action: str, target: str, detail: str = "") -> None:
        """Log and publish one action (after it was done: the record says what happened)."""
        self._log.info("admin_action", operator=operator, action=action, target=target, detail=detail)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        row = json.dumps(asdict(Recorded(at, operator, action, target, detail[:500])), ensure_ascii=False)
        await self._redis.lpush(RECENT_KEY, row)
        await self._redis.ltrim(RECENT_KEY, 0, RECENT_MAX - 1)
        event = ev.OperatorAction(operator=operator, action=action, target=target, detail=detail[:500])
        event.meta.event_id = f"console-{secrets.token_hex(16)}"
        event.meta.conversation_id = f"console:operator:{operator}"
        event.meta.correlation_id = event.meta.event_id
        event.meta.occurred_at.CopyFrom(now_timestamp())
        try:
            await self._publisher.publish(event)
        except TransientError as exc:  # the action is done; the log line above still records it
            self._log.error("admin_action_not_in_event_log", operator=operator, action=action, error=str(exc))

    async def recent(self, limit: int = 50) -> list[Recorded]:
        """The last `limit` actions, newest first."""
        rows = await self._redis.lrange(RECENT_KEY, 0, limit - 1)
        return [Recorded(**json.loads(row)) for row in rows]
