"""Figures of a run: percentiles and the printed report."""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


@dataclass
class Results:
    users: int
    messages: int
    llm_latency_s: float
    retry_rate: float
    wall_s: float = 0.0
    ack_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    replies: int = 0
    lost: int = 0
    duplicated: int = 0
    callbacks_failed: int = 0
    retries_sent: int = 0
    llm_max_in_flight: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    replicas: str = "one of each service"

    def render(self) -> str:
        def row(name: str, values: list[float]) -> str:
            ms = [v * 1000 for v in values]
            return (
                f"  {name:<22} p50 {percentile(ms, 0.5):8.1f} ms   p95 {percentile(ms, 0.95):8.1f} ms   "
                f"p99 {percentile(ms, 0.99):8.1f} ms   max {max(ms, default=float('nan')):8.1f} ms"
            )

        rate = self.replies / self.wall_s if self.wall_s else 0.0
        return "\n".join(
            [
                f"wxbot bench — {self.users} users × {self.messages // max(self.users, 1)} messages, "
                f"fake LLM latency {self.llm_latency_s:.2f} s, WeCom retries {self.retry_rate:.0%}",
                f"  machine                {machine()}",
                f"  replicas               {self.replicas}",
                f"  replies/s              {rate:8.1f}   ({self.replies} replies in {self.wall_s:.1f} s)",
                row("callback ack", self.ack_s),
                row("end-to-end reply", self.e2e_s),
                f"  lost replies           {self.lost}",
                f"  duplicated replies     {self.duplicated}",
                f"  failed callbacks       {self.callbacks_failed}   (then retried as WeCom does; "
                f"duplicate deliveries sent: {self.retries_sent}) {dict(self.failure_reasons) or ''}",
                f"  LLM calls in flight    {self.llm_max_in_flight} at peak (one conversation = at most one)",
            ]
        )
