"""Settings of the skills service (environment variables, then `.env`)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from wxbot_common.settings import CommonSettings


class SkillsSettings(CommonSettings):
    skills_http_port: int = Field(8084, description="ops HTTP port: /healthz /readyz /metrics")
    reminders_time_zone: str = Field(
        "Asia/Shanghai", description="IANA time zone in which users' times (明天上午9点) are meant and repeats recur"
    )
    reminders_max_per_user: int = Field(50, ge=1, description="reminders one user may have scheduled at once")
    reminders_max_ahead_days: float = Field(
        366.0, gt=0, description="how far ahead a reminder may be set (further is refused as a mistake)"
    )
    reminders_min_interval_s: float = Field(
        60.0, ge=1, description="the shortest interval of a repeating reminder (`every`)"
    )
    reminders_keep_fired_s: float = Field(
        86400.0,
        ge=60,
        description="a reminder that fired while no skills replica ran is still sent when one starts, up to this "
        "long after; then it is dropped",
    )
    reminders_concurrency: int = Field(16, ge=1, description="fired reminders handed to the pipeline at once")

    @field_validator("reminders_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"not an IANA time zone: {value!r}") from exc
        return value
