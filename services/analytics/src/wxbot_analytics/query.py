"""What a report request may ask, checked before any SQL runs: a bad request is a clear 400.

Only the names below reach the SQL, and only as keys into fixed fragments; every value (times,
limits) travels as a server-side parameter. Unknown query parameters are refused rather than
ignored, so a typo or an injection attempt never reads as "the default".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

BUCKETS: dict[str, str] = {"hour": "toStartOfHour(at)", "day": "toStartOfDay(at)"}
MAX_BUCKETS = 24 * 62  # an hourly series over two months at most
RELATIVE = re.compile(r"^(\d{1,6})([mhdw])$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
ALLOWED = {"since", "until", "bucket", "limit"}


class BadQueryError(ValueError):
    """The request cannot be answered as asked; the message says why."""


@dataclass(frozen=True)
class ReportQuery:
    since: datetime
    until: datetime
    bucket: Literal["hour", "day"] = "hour"
    limit: int = 20

    @property
    def params(self) -> dict[str, object]:
        return {"since": _sql_time(self.since), "until": _sql_time(self.until), "limit": self.limit}

    def to_json(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "bucket": self.bucket}


def _sql_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_time(value: str, now: datetime, name: str) -> datetime:
    """`7d`, `12h`, `30m`, `2w` before now, or an ISO 8601 time (UTC unless it says otherwise)."""
    value = value.strip()
    match = RELATIVE.match(value)
    if match:
        try:
            return now - int(match.group(1)) * UNITS[match.group(2)]
        except OverflowError:
            raise BadQueryError(f"{name}={value!r} reaches before the year 1") from None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadQueryError(f"{name}={value[:40]!r}: use a duration like 7d, 24h, 30m or an ISO 8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_query(args: dict[str, str], max_range_days: int, now: datetime | None = None) -> ReportQuery:
    """The report query of a request's parameters, or BadQueryError."""
    unknown = sorted(set(args) - ALLOWED)
    if unknown:
        raise BadQueryError(
            f"unknown parameter(s): {', '.join(u[:40] for u in unknown)}; allowed: {', '.join(sorted(ALLOWED))}"
        )
    now = now or datetime.now(UTC)
    since = parse_time(args.get("since", "7d"), now, "since")
    until = parse_time(args["until"], now, "until") if args.get("until") else now
    if since >= until:
        raise BadQueryError("since must be before until")
    if until - since > timedelta(days=max_range_days):
        raise BadQueryError(f"the range is longer than {max_range_days} days (ANALYTICS_MAX_RANGE_DAYS)")
    if since.year < 2000 or until > now + timedelta(days=1):
        raise BadQueryError("the range must lie between the year 2000 and tomorrow")
    bucket = args.get("bucket", "hour" if until - since <= timedelta(days=2) else "day")
    if bucket not in BUCKETS:
        raise BadQueryError(f"bucket={bucket[:40]!r}: use one of {', '.join(BUCKETS)}")
    if bucket == "hour" and (until - since) > timedelta(hours=MAX_BUCKETS):
        raise BadQueryError(f"an hourly series covers at most {MAX_BUCKETS // 24} days: use bucket=day")
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise BadQueryError(f"limit={raw_limit[:40]!r}: a whole number from 1 to 1000")
    return ReportQuery(since, until, "hour" if bucket == "hour" else "day", int(raw_limit))
