"""What the dashboard draws when no analytics service is configured: each service's `/readyz`
and `/metrics`, sampled every CONSOLE_SAMPLE_S into a short in-memory history.

Counters become rates between two samples (a restarted process resets its counters: a negative
difference counts as the new value); histograms become the mean of the interval; gauges are read
as they are. The history is this replica's own (an hour at the default interval); the analytics
service keeps the long one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wxbot_common.http_client import HttpError, TracedHttp

HISTORY = 720


@dataclass
class Health:
    service: str
    url: str
    ready: bool = False
    detail: str = "not checked yet"
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counters (and histogram sums/counts) summed over every service, by series name."""

    counters: dict[str, float]
    gauges: dict[str, float]


def totals_of(text: str) -> Totals:
    """The dashboard's series out of one service's Prometheus exposition."""
    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            named = series_of(sample)
            if named is not None:
                into = gauges if named[0] == "gauge" else counters
                into[named[1]] = into.get(named[1], 0.0) + float(sample.value)
    return Totals(counters, gauges)


def series_of(s: Sample) -> tuple[str, str] | None:
    """("counter" | "gauge", series name) of a sample the dashboard shows, else None."""
    labels = s.labels
    if s.name == "wxbot_gateway_callbacks_total" and labels.get("outcome") == "accepted":
        return "counter", "traffic.messages"
    if s.name == "wxbot_gateway_deliveries_total":
        return "counter", f"deliveries.{labels.get('outcome', '?')}"
    if s.name in ("wxbot_consumer_handle_seconds_sum", "wxbot_consumer_handle_seconds_count"):
        return "counter", f"stage.{labels.get('durable', '?')}.{'sum' if s.name.endswith('_sum') else 'count'}"
    if s.name == "wxbot_nlp_llm_tokens_total":
        return "counter", f"tokens.{labels.get('direction', '?')}"
    if s.name == "wxbot_nlp_replies_total":
        return "counter", f"source.{labels.get('source', '?')}"
    if s.name == "wxbot_safety_decisions_total" and labels.get("verdict") == "blocked":
        return "counter", f"safety.{labels.get('stage', '?')}.{labels.get('reason', '?')}"
    if s.name == "wxbot_consumer_pending":
        return "gauge", f"lag.{labels.get('durable', '?')}"
    return None


@dataclass
class Point:
    at: float
    counters: dict[str, float]
    gauges: dict[str, float]


class MetricsSampler:
    def __init__(self, services: dict[str, str], http: TracedHttp, every_s: float) -> None:
        self.services = services
        self._http = http
        self.every_s = every_s
        self.health = {name: Health(name, url) for name, url in services.items()}
        self.points: deque[Point] = deque(maxlen=HISTORY)

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.every_s)

    async def sample(self) -> None:
        results = await asyncio.gather(*(self._probe(name, url) for name, url in self.services.items()))
        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        for totals in results:
            if totals is None:
                continue
            for k, v in totals.counters.items():
                counters[k] = counters.get(k, 0.0) + v
            for k, v in totals.gauges.items():
                gauges[k] = gauges.get(k, 0.0) + v
        self.points.append(Point(time.time(), counters, gauges))

    async def _probe(self, name: str, url: str) -> Totals | None:
        health = self.health[name]
        try:
            async with self._http.request("GET", f"{url}/readyz", timeout_s=3) as resp:
                report = await resp.json(content_type=None)
                health.ready = resp.status == 200
            checks = report.get("checks", {}) if isinstance(report, dict) else {}
            health.checks = {str(k): bool(v) for k, v in checks.items()}
            details = report.get("details", {}) if isinstance(report, dict) else {}
            health.detail = "; ".join(f"{k}: {v}" for k, v in details.items()) or (
                "ready" if health.ready else "not ready"
            )
            async with self._http.request("GET", f"{url}/metrics", timeout_s=3) as resp:
                text = await resp.text()
            return totals_of(text)
        except (*HttpError, ValueError) as exc:
            health.ready, health.checks, health.detail = False, {}, f"unreachable ({type(exc).__name__})"
            return None

    def series(self) -> dict[str, object]:
        """uPlot-ready data: one time axis and, per chart, named series of equal length."""
        points = list(self.points)
        times = [p.at for p in points[1:]]
        rates: dict[str, list[float | None]] = {}
        means: dict[str, list[float | None]] = {}
        names = sorted({k for p in points for k in p.counters})
        for key in names:
            if key.startswith("stage.") and key.endswith(".sum"):
                stage = key.removesuffix(".sum")
                means[stage] = [_mean(a, b, stage) for a, b in _pairs(points)]
            elif not key.startswith("stage."):
                rates[key] = [_rate(a, b, key) for a, b in _pairs(points)]
        lags = sorted({k for p in points for k in p.gauges})
        last = points[-1].counters if points else {}
        return {
            "time": times,
            "rates": rates,
            "stage_ms": means,
            "lag": {k: [p.gauges.get(k) for p in points[1:]] for k in lags},
            "totals": {k: last[k] for k in names if not k.startswith("stage.")},
        }


def _pairs(points: list[Point]) -> Iterable[tuple[Point, Point]]:
    return itertools.pairwise(points)


def _delta(a: Point, b: Point, key: str) -> float | None:
    if key not in b.counters:
        return None
    before, now = a.counters.get(key, 0.0), b.counters[key]
    return now - before if now >= before else now  # a restart reset the counter


def _rate(a: Point, b: Point, key: str) -> float | None:
    delta = _delta(a, b, key)
    span = b.at - a.at
    return None if delta is None or span <= 0 else round(delta / span, 4)


def _mean(a: Point, b: Point, stage: str) -> float | None:
    total, count = _delta(a, b, f"{stage}.sum"), _delta(a, b, f"{stage}.count")
    if total is None or not count:
        return None
    return round(1000 * total / count, 2)
