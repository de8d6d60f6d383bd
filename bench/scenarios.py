"""Named presets of the load: `python -m bench --scenario NAME` reproduces one row of the performance table.

Each preset only sets defaults: any knob given on the command line wins (`--scenario burst --users 50`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    defaults: dict[str, Any]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "burst",
            "200 users × 3 messages at once, fake LLM 1 s, every message traced and exported",
            {"users": 200, "messages": 3, "llm_latency": 1.0, "rate": None, "sampler_ratio": None, "otlp": True},
        ),
        Scenario(
            "fast",
            "50 users × 20 messages, fake LLM 0 ms (the pipeline's own cost), 10 % of traces sampled and exported",
            {"users": 50, "messages": 20, "llm_latency": 0.0, "rate": None, "sampler_ratio": 0.1, "otlp": True},
        ),
        Scenario(
            "steady",
            "open loop: 50 messages/s for 20 s from 200 users (Poisson arrivals), fake LLM 200 ms, every message "
            "traced and exported",
            {
                "users": 200,
                "rate": 50.0,
                "duration": 20.0,
                "arrivals": "poisson",
                "llm_latency": 0.2,
                "sampler_ratio": None,
                "otlp": True,
            },
        ),
        Scenario(
            "idle",
            "one user, 20 messages one at a time, fake LLM 50 ms: the latency floor of an idle system",
            {"users": 1, "messages": 20, "llm_latency": 0.05, "rate": None, "sampler_ratio": None, "otlp": False},
        ),
    )
}

MAKE_BENCH = ("burst", "fast", "steady")  # what `make bench` runs, in this order
