"""Reminders kept as JetStream message schedules, in a stream of their own.

`WXBOT_REMINDERS` holds one schedule message per reminder on `wxbot.remind.sched.<owner>.<id>`
(the server allows one schedule per subject: publishing again replaces it) and the messages the
server fires on `wxbot.remind.due.<owner>`. It has no age limit — the event log's 30 days would
delete a schedule before it fires — and each fired message lives `keep_fired` (its
`Nats-Schedule-TTL`), enough for a skills replica to take it after a restart. A one-off schedule
is removed by the server when it fires; cancelling removes (purges) the schedule's subject.

Reading a user's reminders asks the stream which of their schedule subjects hold a message and
reads each one's last message directly: the schedules are the only record, nothing can drift.
"""

from __future__ import annotations

from datetime import timedelta

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.errors import Error as JetStreamError
from pydantic import ValidationError

from wxbot_common.logs import get_logger
from wxbot_skills.reminders.records import Reminder
from wxbot_skills.reminders.rules import Schedule

REMINDERS_STREAM = "WXBOT_REMINDERS"
SUBJECTS = "wxbot.remind.>"
DUE_FILTER = "wxbot.remind.due.>"
DUE_DURABLE = "skills-reminders-due"
DUE_ACK_WAIT_S = 30.0
DUE_MAX_DELIVER = 10
ERR_TIME_ZONE = 10223  # the server does not know the time zone (no tzdata where it runs)


def schedule_subject(owner: str, rid: str) -> str:
    return f"wxbot.remind.sched.{owner}.{rid}"


def due_subject(owner: str) -> str:
    return f"wxbot.remind.due.{owner}"


class BookUnavailableError(Exception):
    """The reminders could not be read or written (NATS away, or it refused the schedule)."""


def stream_config(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=REMINDERS_STREAM,
        description="wxbot reminders: one schedule message per reminder, and what they fire",
        subjects=[SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,  # schedules refuse `new`; nothing is limited, so nothing is discarded
        num_replicas=replicas,
        duplicate_window=120.0,
        allow_msg_schedules=True,
        allow_msg_ttl=True,  # each fired message carries Nats-TTL (keep_fired)
        allow_rollup_hdrs=True,  # implied by schedules; stated so that an update changes nothing
        allow_direct=True,
    )


def due_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DUE_DURABLE,
        description="skills: hand every fired reminder to the pipeline, once",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=DUE_ACK_WAIT_S,
        max_deliver=DUE_MAX_DELIVER,
        max_ack_pending=1000,
        filter_subject=DUE_FILTER,
    )


class ReminderBook:
    def __init__(self, js: JetStreamContext, replicas: int, keep_fired: timedelta) -> None:
        self._js = js
        self._replicas = replicas
        self._ttl = f"{int(keep_fired.total_seconds())}s"
        self._log = get_logger("wxbot.skills.reminders")

    async def ensure(self) -> None:
        """Create or update the stream and the durable that takes fired reminders (idempotent)."""
        config = stream_config(self._replicas)
        try:
            await self._js.stream_info(REMINDERS_STREAM)
        except NotFoundError:
            await self._js.add_stream(config)
        else:
            await self._js.update_stream(config)
        await self._js.add_consumer(REMINDERS_STREAM, due_consumer_config())

    async def put(self, reminder: Reminder, schedule: Schedule) -> None:
        """Schedule it (again: the same id replaces the earlier schedule)."""
        headers = {
            "Nats-Schedule": schedule.pattern,
            "Nats-Schedule-Target": due_subject(reminder.owner),
            "Nats-Schedule-TTL": self._ttl,
        }
        if schedule.time_zone:
            headers["Nats-Schedule-Time-Zone"] = schedule.time_zone
        subject = schedule_subject(reminder.owner, reminder.id)
        try:
            await self._js.publish(subject, reminder.model_dump_json().encode(), headers=headers, timeout=5)
        except BadRequestError as exc:
            self._log.error(
                "schedule_refused", code=exc.err_code, description=exc.description, pattern=schedule.pattern
            )
            if exc.err_code == ERR_TIME_ZONE:
                raise BookUnavailableError(
                    f"the message server does not know the time zone {schedule.time_zone} (it needs tzdata), "
                    "so repeats at a fixed time cannot be scheduled"
                ) from exc
            raise BookUnavailableError("the message server refused the schedule") from exc
        except (TimeoutError, nats.errors.Error, JetStreamError) as exc:
            raise BookUnavailableError(f"the reminder could not be stored ({type(exc).__name__})") from exc

    async def of_owner(self, owner: str) -> list[Reminder]:
        """Every reminder `owner` has scheduled (a one-off that fired is gone)."""
        try:
            info = await self._js.stream_info(REMINDERS_STREAM, subjects_filter=schedule_subject(owner, "*"))
            found: list[Reminder] = []
            for subject in sorted(info.state.subjects or {}):
                try:
                    msg = await self._js.get_last_msg(REMINDERS_STREAM, subject, direct=True)
                except NotFoundError:  # fired or cancelled meanwhile
                    continue
                try:
                    found.append(Reminder.model_validate_json(msg.data or b""))
                except ValidationError:
                    self._log.error("unreadable_reminder", subject_owner=owner)
            return found
        except (TimeoutError, nats.errors.Error, JetStreamError) as exc:
            raise BookUnavailableError(f"the reminders could not be read ({type(exc).__name__})") from exc

    async def cancel(self, owner: str, rid: str) -> bool:
        """Remove `owner`'s reminder `rid`; False when they have none by that id."""
        subject = schedule_subject(owner, rid)
        try:
            info = await self._js.stream_info(REMINDERS_STREAM, subjects_filter=subject)
            if not info.state.subjects:
                return False
            await self._js.purge_stream(REMINDERS_STREAM, subject=subject)
            return True
        except (TimeoutError, nats.errors.Error, JetStreamError) as exc:
            raise BookUnavailableError(f"the reminder could not be cancelled ({type(exc).__name__})") from exc
