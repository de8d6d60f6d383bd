"""Reminder times as the model gives them, checked and turned into what the NATS server schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from wxbot_skills.reminders.rules import (
    Limits,
    RuleError,
    check,
    next_firing,
    parse_at,
    parse_every,
    schedule_of,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
LIMITS = Limits(max_ahead=timedelta(days=366), min_interval=timedelta(seconds=60))
NOW = datetime(2026, 5, 1, 20, 30, tzinfo=SHANGHAI).astimezone(UTC)  # a Friday evening in Shanghai


def test_a_local_time_without_offset_is_the_deployments_and_one_with_an_offset_is_converted() -> None:
    assert parse_at("2026-05-02T09:00", SHANGHAI) == datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI)
    assert parse_at("2026-05-02 09:00:00", SHANGHAI) == datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI)
    converted = parse_at("2026-05-02T01:00:00Z", SHANGHAI)
    assert converted == datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI) and converted.tzinfo == SHANGHAI


@pytest.mark.parametrize("raw", ["明天上午9点", "tomorrow", "2026-13-01T09:00", ""])
def test_a_time_that_is_not_iso_is_refused_plainly(raw: str) -> None:
    with pytest.raises(RuleError, match="not an ISO 8601 date and time"):
        parse_at(raw, SHANGHAI)


def test_intervals_are_a_number_and_a_unit() -> None:
    assert parse_every("30m") == timedelta(minutes=30)
    assert parse_every(" 2 h ") == timedelta(hours=2)
    assert parse_every("90s") == timedelta(seconds=90)
    assert parse_every("1d") == timedelta(days=1)
    for bad in ("1.5h", "half an hour", "30", "-5m", "1w"):
        with pytest.raises(RuleError, match="whole number and a unit"):
            parse_every(bad)


def test_tomorrow_at_nine_is_one_at_schedule_in_utc() -> None:
    rule = check(datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI), "none", None, NOW, LIMITS)
    schedule = schedule_of(rule, "Asia/Shanghai")
    assert (schedule.pattern, schedule.time_zone) == ("@at 2026-05-02T01:00:00Z", None)
    assert next_firing(rule, NOW, SHANGHAI) == datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI)


def test_a_time_in_the_past_or_over_a_year_ahead_is_refused_with_the_current_time() -> None:
    with pytest.raises(RuleError, match=r"in the past \(it is now 2026-05-01T20:30:00\+08:00\)") as past:
        check(datetime(2026, 5, 1, 9, 0, tzinfo=SHANGHAI), "none", None, NOW, LIMITS)
    assert past.value.reason == "past"
    with pytest.raises(RuleError, match="more than 366 days ahead") as far:
        check(datetime(2027, 6, 1, 9, 0, tzinfo=SHANGHAI), "none", None, NOW, LIMITS)
    assert far.value.reason == "too_far"
    with pytest.raises(RuleError, match="more than 366 days ahead"):  # a repeat's start too
        check(datetime(2030, 1, 1, 9, 0, tzinfo=SHANGHAI), "daily", None, NOW, LIMITS)


def test_a_repeat_at_a_time_of_day_that_already_passed_today_is_fine() -> None:
    rule = check(datetime(2026, 5, 1, 8, 0, tzinfo=SHANGHAI), "daily", None, NOW, LIMITS)
    assert schedule_of(rule, "Asia/Shanghai").pattern == "0 0 8 * * *"
    assert next_firing(rule, NOW, SHANGHAI) == datetime(2026, 5, 2, 8, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("repeat", "pattern", "following"),
    [
        ("hourly", "15 45 * * * *", datetime(2026, 5, 1, 20, 45, 15, tzinfo=SHANGHAI)),
        ("daily", "15 45 7 * * *", datetime(2026, 5, 2, 7, 45, 15, tzinfo=SHANGHAI)),
        ("weekdays", "15 45 7 * * 1-5", datetime(2026, 5, 4, 7, 45, 15, tzinfo=SHANGHAI)),  # Sat, Sun skipped
        ("weekly", "15 45 7 * * 3", datetime(2026, 5, 6, 7, 45, 15, tzinfo=SHANGHAI)),  # at's weekday: Wednesday
        ("monthly", "15 45 7 29 * *", datetime(2026, 5, 29, 7, 45, 15, tzinfo=SHANGHAI)),
    ],
)
def test_repeats_are_six_field_crons_in_the_deployments_zone(repeat: str, pattern: str, following: datetime) -> None:
    at = datetime(2026, 4, 29, 7, 45, 15, tzinfo=SHANGHAI)  # a Wednesday
    rule = check(at, repeat, None, NOW, LIMITS)  # type: ignore[arg-type]
    schedule = schedule_of(rule, "Asia/Shanghai")
    assert (schedule.pattern, schedule.time_zone) == (pattern, "Asia/Shanghai")
    assert len(schedule.pattern.split()) == 6  # the server refuses classic five-field crons
    assert next_firing(rule, NOW, SHANGHAI) == following


def test_a_monthly_repeat_on_the_31st_skips_shorter_months() -> None:
    rule = check(datetime(2026, 1, 31, 9, 0, tzinfo=SHANGHAI), "monthly", None, NOW, LIMITS)
    assert next_firing(rule, NOW, SHANGHAI) == datetime(2026, 5, 31, 9, 0, tzinfo=SHANGHAI)
    june = datetime(2026, 6, 1, tzinfo=SHANGHAI)
    assert next_firing(rule, june, SHANGHAI) == datetime(2026, 7, 31, 9, 0, tzinfo=SHANGHAI)


def test_a_daily_repeat_keeps_its_local_time_across_a_dst_change() -> None:
    before = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)  # the day before clocks go forward
    rule = check(datetime(2026, 3, 1, 9, 0, tzinfo=NEW_YORK), "daily", None, before, LIMITS)
    following = next_firing(rule, before + timedelta(days=1), NEW_YORK)
    assert following == datetime(2026, 3, 9, 9, 0, tzinfo=NEW_YORK)
    assert following is not None and following.utcoffset() == timedelta(hours=-4)


def test_an_interval_counts_from_now_and_has_bounds() -> None:
    rule = check(None, "none", timedelta(minutes=30), NOW, LIMITS)
    assert schedule_of(rule, "Asia/Shanghai") == schedule_of(rule, "UTC")
    assert schedule_of(rule, "Asia/Shanghai").pattern == "@every 1800s"
    assert next_firing(rule, NOW + timedelta(minutes=31), SHANGHAI) == (NOW + timedelta(minutes=60)).astimezone(
        SHANGHAI
    )
    with pytest.raises(RuleError, match="at least 1 minute;"):
        check(None, "none", timedelta(seconds=10), NOW, LIMITS)
    with pytest.raises(RuleError, match="at most 366 days"):
        check(None, "none", timedelta(days=400), NOW, LIMITS)
    with pytest.raises(RuleError, match="not both"):
        check(datetime(2026, 5, 2, 9, 0, tzinfo=SHANGHAI), "none", timedelta(hours=1), NOW, LIMITS)
    with pytest.raises(RuleError, match="not both"):
        check(None, "daily", timedelta(hours=1), NOW, LIMITS)


def test_without_a_time_or_an_interval_there_is_nothing_to_schedule() -> None:
    with pytest.raises(RuleError, match="`at` is required"):
        check(None, "none", None, NOW, LIMITS)
    with pytest.raises(RuleError, match="`at` is required"):
        check(None, "daily", None, NOW, LIMITS)
