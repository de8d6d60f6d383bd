"""The reminders skill (日程管理): the tools the model calls to create, list and cancel a user's
reminders, and to learn the date and time they are meant in.

Every tool needs to know who is asking (`CallContext`): a user sees and cancels only their own
reminders. Whatever cannot be done — a time in the past or absurdly far ahead, an interval too
short, too many reminders, an id the user does not have — is a `SkillError` the model reads;
nothing is scheduled or changed then.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import Field

from wxbot_common.logs import get_logger
from wxbot_skill import CallContext, Skill, SkillError
from wxbot_skills.reminders.book import BookUnavailableError, ReminderBook
from wxbot_skills.reminders.metrics import ReminderMetrics
from wxbot_skills.reminders.records import ID_PATTERN, Reminder, owner_key, reminder_id
from wxbot_skills.reminders.rules import (
    Limits,
    Repeat,
    RuleError,
    check,
    next_firing,
    parse_at,
    parse_every,
    schedule_of,
)

VERSION = "1.0.0"
WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")

CREATE = """Set a reminder for the user (提醒我…, 日程): the user gets a message with `text` when it fires.
Once at `at`; or repeating at `at`'s time (`repeat`: hourly, daily, weekdays, weekly on `at`'s weekday,
monthly on `at`'s day); or every interval from now (`every`, without `at`). Times are local to {zone}:
call current_time first when the user says 今天, 明天, 下周一 and the like. Returns the reminder's id
and when it fires next; tell the user."""
TIME = """The current local date, time and weekday ({zone}), which reminder times are meant in. Call it
before create_reminder whenever the user names a day or time relative to now."""
LIST = "The user's reminders that are still to fire: id, text, when next, how they repeat."
CANCEL = "Cancel one of the user's reminders by its id (list_reminders gives the ids)."


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _repeat_label(reminder: Reminder) -> str:
    if reminder.every_s is not None:
        return f"every {reminder.every_s}s"
    return "once" if reminder.repeat == "none" else reminder.repeat


class RemindersTools:
    """The tools' logic, apart from their registration (testable without NATS)."""

    def __init__(
        self,
        book: ReminderBook,
        zone: str,
        limits: Limits,
        max_per_user: int,
        metrics: ReminderMetrics,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._book = book
        self._zone_name = zone
        self._zone = ZoneInfo(zone)
        self._limits = limits
        self._max_per_user = max_per_user
        self._metrics = metrics
        self._clock = clock
        self._log = get_logger("wxbot.skills.reminders")

    def _refuse(self, reason: str, message: str) -> SkillError:
        self._metrics.refused.labels(reason).inc()
        return SkillError(message)

    def _owner(self, caller: CallContext | None) -> tuple[str, CallContext]:
        if caller is None or not caller.reply_to:
            raise self._refuse("no_caller", "reminders need to know which user is asking; this call did not say")
        return owner_key(caller), caller

    def now(self) -> datetime:
        return self._clock().astimezone(self._zone)

    def current_time(self) -> dict[str, str]:
        now = self.now()
        return {
            "now": now.isoformat(timespec="seconds"),
            "weekday": WEEKDAYS[now.weekday()],
            "time_zone": self._zone_name,
        }

    async def create(
        self, text: str, at: str | None, repeat: Repeat, every: str | None, caller: CallContext | None
    ) -> dict[str, Any]:
        owner, who = self._owner(caller)
        text = text.strip()
        if not text:
            raise self._refuse("bad_time", "`text` is empty: what should the reminder say? Nothing was scheduled")
        now = self._clock()
        try:
            when = parse_at(at, self._zone) if at else None
            interval = parse_every(every) if every else None
            rule = check(when, repeat, interval, now, self._limits)
        except RuleError as exc:
            raise self._refuse(exc.reason, str(exc)) from exc
        rid = reminder_id(owner, who, text, at, repeat, every)
        reminder = Reminder.create(rid, owner, text, rule, self._zone_name, who)
        try:
            existing = {r.id for r in await self._book.of_owner(owner)}
            if rid not in existing and len(existing) >= self._max_per_user:
                raise self._refuse(
                    "too_many",
                    f"the user already has {len(existing)} reminders, the most allowed; cancel one first "
                    "(nothing was scheduled)",
                )
            await self._book.put(reminder, schedule_of(rule, self._zone_name))
        except BookUnavailableError as exc:
            raise self._refuse("unavailable", f"{exc}; nothing was scheduled") from exc
        self._metrics.created.labels("every" if interval is not None else repeat).inc()
        upcoming = next_firing(rule, now, self._zone)
        return {
            "scheduled": True,
            "id": rid,
            "text": text,
            "next": upcoming.isoformat(timespec="seconds") if upcoming else None,
            "repeat": _repeat_label(reminder),
            "time_zone": self._zone_name,
        }

    async def list(self, caller: CallContext | None) -> dict[str, Any]:
        owner, _ = self._owner(caller)
        try:
            reminders = await self._book.of_owner(owner)
        except BookUnavailableError as exc:
            raise self._refuse("unavailable", str(exc)) from exc
        now = self._clock()
        rows = []
        for r in reminders:
            upcoming = next_firing(r.rule, now, self._zone)
            rows.append(
                {
                    "id": r.id,
                    "text": r.text,
                    "next": upcoming.isoformat(timespec="seconds") if upcoming else "now",
                    "repeat": _repeat_label(r),
                }
            )
        rows.sort(key=lambda row: str(row["next"]))
        return {"reminders": rows, "now": self.now().isoformat(timespec="seconds"), "time_zone": self._zone_name}

    async def cancel(self, rid: str, caller: CallContext | None) -> dict[str, Any]:
        owner, _ = self._owner(caller)
        rid = rid.strip().lower()
        try:
            mine = {r.id: r for r in await self._book.of_owner(owner)}
            if not re.match(ID_PATTERN, rid) or rid not in mine or not await self._book.cancel(owner, rid):
                ids = ", ".join(sorted(mine)) or "none"
                raise self._refuse(
                    "unknown_id",
                    f"the user has no reminder with id {rid!r} (their reminders: {ids}); nothing was cancelled",
                )
        except BookUnavailableError as exc:
            raise self._refuse("unavailable", f"{exc}; nothing was cancelled") from exc
        self._metrics.cancelled.inc()
        return {"cancelled": True, "id": rid, "text": mine[rid].text}


def reminders_skill(tools: RemindersTools, zone: str) -> Skill:
    """The `reminders` micro service: current_time, create_reminder, list_reminders, cancel_reminder."""
    skill = Skill("reminders", VERSION, "Reminders and schedules (日程管理) of each user")

    async def current_time() -> dict[str, str]:
        return tools.current_time()

    async def create_reminder(
        text: Annotated[str, Field(min_length=1, max_length=200, description="what to remind of, e.g. 开会")],
        at: Annotated[
            str | None,
            Field(max_length=64, description="local date and time, ISO 8601 like 2026-05-02T09:00:00"),
        ] = None,
        repeat: Annotated[
            Repeat, Field(description="none (once), hourly, daily, weekdays (Mon-Fri), weekly or monthly, at `at`")
        ] = "none",
        every: Annotated[
            str | None, Field(max_length=16, description="instead of `at`: an interval from now, like 30m, 2h or 1d")
        ] = None,
        caller: CallContext | None = None,
    ) -> dict[str, Any]:
        return await tools.create(text, at, repeat, every, caller)

    async def list_reminders(caller: CallContext | None = None) -> dict[str, Any]:
        return await tools.list(caller)

    async def cancel_reminder(
        reminder_id: Annotated[str, Field(min_length=1, max_length=64, description="the id to cancel")],
        caller: CallContext | None = None,
    ) -> dict[str, Any]:
        return await tools.cancel(reminder_id, caller)

    for fn, doc in (
        (current_time, TIME),
        (create_reminder, CREATE),
        (list_reminders, LIST),
        (cancel_reminder, CANCEL),
    ):
        fn.__doc__ = doc.format(zone=zone)
        skill.tool(fn)
    return skill


def limits_of(max_ahead_days: float, min_interval_s: float) -> Limits:
    return Limits(timedelta(days=max_ahead_days), timedelta(seconds=min_interval_s))
