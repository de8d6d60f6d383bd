"""When a reminder fires, as the model asked for it and as the NATS server schedules it (pure).

The model gives a local time (`at`, ISO 8601, in the deployment's time zone unless it names an
offset) and/or a repeat rule; this module checks them against the limits and turns them into a
JetStream message schedule (ADR-51): `@at <UTC>` for a one-off, a six-field cron (seconds first —
the server rejects the classic five) with `Nats-Schedule-Time-Zone` for a repeat at a fixed local
time, `@every <n>s` for an interval. Every refusal is a `RuleError` whose message the model reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Repeat = Literal["none", "hourly", "daily", "weekdays", "weekly", "monthly"]
REPEATS: tuple[Repeat, ...] = ("none", "hourly", "daily", "weekdays", "weekly", "monthly")
_EVERY = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RuleError(ValueError):
    """A reminder that cannot be scheduled as asked; the message says why, for the model, and
    `reason` for the metrics: past, too_far or bad_time."""

    def __init__(self, message: str, reason: str = "bad_time") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_ahead: timedelta
    min_interval: timedelta


@dataclass(frozen=True)
class Rule:
    """What the user asked for, checked: a one-off (`at`, repeat none), a repeat at `at`'s local
    time, or an interval (`every`, counted from `since`)."""

    repeat: Repeat
    at: datetime | None  # aware, in the deployment's zone
    every: timedelta | None
    since: datetime  # when it was set (the start of an interval)


@dataclass(frozen=True)
class Schedule:
    """The headers that make the NATS server fire it."""

    pattern: str  # Nats-Schedule
    time_zone: str | None  # Nats-Schedule-Time-Zone (cron only)


def parse_at(raw: str, zone: ZoneInfo) -> datetime:
    """An ISO 8601 date-time (`2026-05-02T09:00`, `2026-05-02 09:00:00`, with or without an offset):
    without an offset it is the deployment's local time."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise RuleError(f"`at` is not an ISO 8601 date and time like 2026-05-02T09:00:00: {raw!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=zone)
    return parsed.astimezone(zone)


def parse_every(raw: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d`: a whole number and one unit."""
    match = _EVERY.match(raw)
    if match is None:
        raise RuleError(f"`every` must be a whole number and a unit s, m, h or d, like 30m or 2h: {raw!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


def check(at: datetime | None, repeat: Repeat, every: timedelta | None, now: datetime, limits: Limits) -> Rule:
    """The rule, or a RuleError saying what is wrong with it; `now` is aware."""
    local_now = now.astimezone(at.tzinfo) if at is not None else now
    shown_now = local_now.isoformat(timespec="seconds")
    if every is not None:
        if repeat != "none" or at is not None:
            raise RuleError(
                "give either `every` (an interval counted from now) or `at` with `repeat` (a fixed time), not both"
            )
        if every < limits.min_interval:
            raise RuleError(f"`every` must be at least {_human(limits.min_interval)}; nothing was scheduled")
        if every > limits.max_ahead:
            raise RuleError(f"`every` may be at most {_human(limits.max_ahead)}; nothing was scheduled", "too_far")
        return Rule("none", None, every, now)
    if at is None:
        raise RuleError("`at` is required (when to remind), unless `every` gives an interval")
    if at - now > limits.max_ahead:
        raise RuleError(
            f"{at.isoformat(timespec='seconds')} is more than {_human(limits.max_ahead)} ahead (it is now "
            f"{shown_now}); that looks like a mistake, so nothing was scheduled",
            "too_far",
        )
    if repeat == "none" and at <= now:
        raise RuleError(
            f"{at.isoformat(timespec='seconds')} is in the past (it is now {shown_now}); nothing was scheduled",
            "past",
        )
    return Rule(repeat, at, None, now)


def schedule_of(rule: Rule, zone: str) -> Schedule:
    """The `Nats-Schedule` (and time zone) that fires `rule`."""
    if rule.every is not None:
        return Schedule(f"@every {int(rule.every.total_seconds())}s", None)
    at = rule.at
    assert at is not None
    if rule.repeat == "none":
        return Schedule(f"@at {at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}", None)
    s, m, h = at.second, at.minute, at.hour
    day_part = {
        "hourly": f"{s} {m} * * * *",
        "daily": f"{s} {m} {h} * * *",
        "weekdays": f"{s} {m} {h} * * 1-5",
        "weekly": f"{s} {m} {h} * * {at.isoweekday() % 7}",  # cron: 0 = Sunday
        "monthly": f"{s} {m} {h} {at.day} * *",
    }[rule.repeat]
    return Schedule(day_part, zone)


def next_firing(rule: Rule, now: datetime, zone: ZoneInfo) -> datetime | None:
    """When `rule` fires next after `now` (local, aware); None when a one-off is past."""
    if rule.every is not None:
        periods = max(1, math.ceil((now - rule.since) / rule.every))
        return (rule.since + periods * rule.every).astimezone(zone)
    at = rule.at
    assert at is not None
    if rule.repeat == "none":
        return at if at > now else None
    local_now = now.astimezone(zone)
    if rule.repeat == "hourly":
        candidate = local_now.replace(minute=at.minute, second=at.second, microsecond=0)
        return candidate if candidate > local_now else candidate + timedelta(hours=1)
    wanted = time(at.hour, at.minute, at.second)
    for offset in range(0, 400):
        day = local_now.date() + timedelta(days=offset)
        if _matches(rule.repeat, at, day):
            candidate = datetime.combine(day, wanted, tzinfo=zone)
            if candidate > local_now:
                return candidate
    return None


def _matches(repeat: Repeat, at: datetime, day: date) -> bool:
    if repeat == "weekdays":
        return day.isoweekday() <= 5
    if repeat == "weekly":
        return day.isoweekday() == at.isoweekday()
    if repeat == "monthly":
        return day.day == at.day
    return True  # daily


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit if count != 1 else unit[:-1]}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
