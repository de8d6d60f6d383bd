"""What the reminders skill counts, on the skills service's /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ReminderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = Counter(
            "wxbot_reminders_created",
            "Reminders scheduled, by repeat (none, daily, …, every)",
            ["repeat"],
            registry=registry,
        )
        self.refused = Counter(
            "wxbot_reminders_refused",
            "Tool calls refused with a reason for the model: past, too_far, bad_time (or empty text), too_many, "
            "unknown_id, no_caller, unavailable",
            ["reason"],
            registry=registry,
        )
        self.cancelled = Counter("wxbot_reminders_cancelled", "Reminders cancelled by their user", registry=registry)
        self.fired = Counter(
            "wxbot_reminders_fired",
            "Fired reminders taken from the stream, by outcome: drafted (handed to the pipeline), retry, dead_letter",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("drafted", "retry", "dead_letter"):
            self.fired.labels(outcome)  # a series from the start, for dashboards and alerts
        self.lag = Histogram(
            "wxbot_reminders_fire_lag_seconds",
            "From the server firing a reminder to its message entering the pipeline",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )
