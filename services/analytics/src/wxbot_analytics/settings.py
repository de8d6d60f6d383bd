"""Settings of the analytics service (environment variables, then `.env`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import Field, field_validator

from wxbot_common.settings import CommonSettings

DEFAULT_NEGATIVE_PHRASES = "不对,不是这样,不是,错了,答错了,wrong,that's wrong,not right,no that's wrong"


@dataclass(frozen=True)
class Price:
    """What a model costs, per million tokens, in the price table's currency."""

    input: float
    output: float


def parse_prices(raw: str) -> dict[str, Price]:
    """`ANALYTICS_PRICES`: {"model": {"input": per 1M tokens, "output": per 1M tokens}, ...}."""
    if not raw.strip():
        return {}
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"ANALYTICS_PRICES is not JSON: {exc}") from exc
    if not isinstance(table, dict):
        raise ValueError('ANALYTICS_PRICES must be an object: {"model": {"input": 0.5, "output": 1.5}}')
    prices: dict[str, Price] = {}
    for model, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"ANALYTICS_PRICES[{model!r}] must be an object with input and output")
        try:
            prices[str(model)] = Price(float(entry.get("input", 0)), float(entry.get("output", 0)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ANALYTICS_PRICES[{model!r}] has a price that is not a number") from exc
    return prices


class AnalyticsSettings(CommonSettings):
    analytics_host: str = Field(
        "", description="bind address of the report API (and /healthz, /metrics); default HTTP_HOST"
    )
    analytics_port: int = Field(8085, description="port of the report API (and /healthz /readyz /metrics)")
    analytics_url: str = Field(
        "", description="where `report` finds the API; default http://ANALYTICS_HOST:ANALYTICS_PORT"
    )
    analytics_clickhouse_url: str = Field(
        "",
        description="a ClickHouse server (http://user:password@host:8123/database); empty: embedded chDB in "
        "ANALYTICS_DATA_DIR",
    )
    analytics_data_dir: str = Field("analytics", description="where the embedded ClickHouse keeps its data")
    analytics_database: str = Field("wxbot", description="database of the read model (embedded store)")
    analytics_hash_key: str = Field(
        "", description="secret key of the user and conversation hashes (HMAC-SHA256); required with a server store"
    )
    analytics_store_text: bool = Field(False, description="store message text (for the top questions report)")
    analytics_retention_days: int = Field(90, ge=1, le=3650, description="rows older than this are dropped (TTL)")
    analytics_batch_max: int = Field(1000, ge=1, le=100_000, description="events inserted in one batch at most")
    analytics_batch_linger_s: float = Field(
        0.05, ge=0, le=10, description="how long a batch waits for more events before it is inserted"
    )
    analytics_concurrency: int = Field(4000, ge=1, description="events in flight between NATS and the store")
    analytics_prices: str = Field("", description='price table per 1M tokens: {"model": {"input": 0.5, "output": 1.5}}')
    analytics_currency: str = Field("USD", description="currency of ANALYTICS_PRICES (shown in reports)")
    analytics_negative_phrases: str = Field(
        DEFAULT_NEGATIVE_PHRASES,
        description="comma-separated replies that count as implicit negative feedback on the answer before",
    )
    analytics_feedback_window_s: int = Field(
        300, ge=1, description="a reply, reset or follow-up this soon after an answer is attributed to it"
    )
    analytics_min_feedback: int = Field(
        30, ge=1, description="feedback per variant needed before the A/B verdict names a winner"
    )
    analytics_max_range_days: int = Field(400, ge=1, description="the longest range a report may cover")

    @field_validator("analytics_prices")
    @classmethod
    def _check_prices(cls, value: str) -> str:
        parse_prices(value)  # raises ValueError naming ANALYTICS_PRICES
        return value

    @property
    def bind_host(self) -> str:
        return self.analytics_host or self.http_host

    @property
    def prices(self) -> dict[str, Price]:
        return parse_prices(self.analytics_prices)

    @property
    def negative_phrases(self) -> list[str]:
        return [p.strip() for p in self.analytics_negative_phrases.split(",") if p.strip()]
