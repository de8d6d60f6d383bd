"""Pure figures of a run: percentiles, pipeline overhead, per-conversation order."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds of durations in seconds (None where there is no value, for JSON)."""
    ms = sorted(v * 1000 for v in values_s)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = percentile(ms, q)
        out[name] = None if math.isnan(value) else round(value, 2)
    out["max"] = round(ms[-1], 2) if ms else None
    out["count"] = len(ms)
    return out


def overhead_s(e2e_s: Iterable[float], llm_latency_s: float) -> list[float]:
    """What the pipeline adds to each reply: end-to-end time minus the fake LLM's answer time."""
    return [e - llm_latency_s for e in e2e_s]


@dataclass(frozen=True, slots=True)
class Sent:
    """When one message of a conversation was sent, and when its callback was acked (inf: never)."""

    sent_at: float
    acked_at: float = math.inf


@dataclass
class OrderCheck:
    """Replies that arrived after the reply to a later message of the same user.

    `violations`: the earlier message's callback had been acked before the later one was sent, so
    the bot knew the order and broke it. `overlapping`: both callbacks were in flight at once, so
    the order the gateway saw is not the order the load generator meant; counted apart, not a fault.
    """

    violations: int = 0
    overlapping: int = 0
    examples: list[str] = field(default_factory=list)
    late: list[tuple[str, int]] = field(default_factory=list)  # (user, index) of each violation's late reply


def check_order(
    per_user: Mapping[str, Sequence[int]], sent: Mapping[tuple[str, int], Sent], limit: int = 3
) -> OrderCheck:
    """`per_user[user]`: the send index of each message in the order its first reply arrived.

    A lost reply leaves a gap, not a violation.
    """
    result = OrderCheck()
    for user, arrivals in per_user.items():
        replied: list[int] = []
        for seq in arrivals:
            overtaken_by = [later for later in replied if later > seq]
            replied.append(seq)
            if not overtaken_by:
                continue
            acked = sent[(user, seq)].acked_at if (user, seq) in sent else math.inf
            if any(acked <= sent[(user, later)].sent_at for later in overtaken_by if (user, later) in sent):
                result.violations += 1
                result.late.append((user, seq))
                if len(result.examples) < limit:
                    result.examples.append(f"{user}: #{seq} after #{max(overtaken_by)}")
            else:
                result.overlapping += 1
    return result


@dataclass(frozen=True, slots=True)
class Round:
    """The k-th message of every closed-loop user: when its last reply came (s from the load's start)
    and its end-to-end times. In a closed loop the run's length is the sum of each round's slowest
    conversation, so this shows which round a burst loses its time in."""

    index: int
    messages: int
    last_reply_s: float
    e2e_p50_s: float
    e2e_max_s: float


def rounds(
    owner: Mapping[str, tuple[str, int]],
    sent_at: Mapping[str, float],
    arrived_at: Mapping[str, float],
    load_started: float,
) -> list[Round]:
    """Group answered messages by their index in their user's conversation (unanswered ones are left out)."""
    by_index: dict[int, list[str]] = {}
    for tag, (_, index) in owner.items():
        if tag in arrived_at and tag in sent_at:
            by_index.setdefault(index, []).append(tag)
    out = []
    for index in sorted(by_index):
        tags = by_index[index]
        e2e = [arrived_at[t] - sent_at[t] for t in tags]
        out.append(
            Round(
                index=index,
                messages=len(tags),
                last_reply_s=max(arrived_at[t] for t in tags) - load_started,
                e2e_p50_s=percentile(e2e, 0.5),
                e2e_max_s=max(e2e),
            )
        )
    return out
