"""Where a message's time goes, read from its trace: each span's median start and end, counted
from the moment the gateway began answering the callback.

The bench's OTLP sink dumps what the services export (`--timeline`); a trace of a whole message
(callback, checks, history lookup, LLM call, delivery) gives one offset per span. The medians over
every such trace show which hop the overhead sits in — a NATS hop, the context lookup, the reply
check — which the end-to-end figures cannot. Clocks are the same host's, so offsets compare.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from wxbot_devkit.otlp_sink import SpanRecord, flatten, read_dump

MIN_SHARE = 0.5  # a span is shown when at least this share of the message traces have it
MIN_SPANS = 3  # fewer: a duplicate callback's own trace (the callback and its dedupe), not a message


@dataclass
class Milestone:
    """One span of a message's trace, summarized over the traces that have it (ms)."""

    service: str
    kind: str
    name: str
    traces: int
    start_ms: float
    end_ms: float
    duration_p50_ms: float
    duration_p90_ms: float


def milestones(traces: list[list[SpanRecord]], min_share: float = MIN_SHARE) -> tuple[int, list[Milestone]]:
    """(how many traces are whole messages, their spans) — keyed by service, name and occurrence
    within the trace (a second `POST` is another step), ordered by median start."""
    starts: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    ends: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    durations: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    whole = 0
    for spans in traces:
        roots = [s for s in spans if not s.parent_span_id]
        if len(roots) != 1 or len(spans) < MIN_SPANS:
            continue
        whole += 1
        t0 = roots[0].start_time_unix_nano
        seen: Counter[tuple[str, str, str]] = Counter()
        for span in sorted(spans, key=lambda s: s.start_time_unix_nano):
            step = (span.service_name, span.kind, span.name)
            key = (*step, seen[step])
            seen[step] += 1
            starts[key].append((span.start_time_unix_nano - t0) / 1e6)
            ends[key].append((span.end_time_unix_nano - t0) / 1e6)
            durations[key].append((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)
    rows = [
        Milestone(
            service=key[0],
            kind=key[1],
            name=key[2],
            traces=len(starts[key]),
            start_ms=statistics.median(starts[key]),
            end_ms=statistics.median(ends[key]),
            duration_p50_ms=statistics.median(durations[key]),
            duration_p90_ms=p90(durations[key]),
        )
        for key in starts
        if whole and len(starts[key]) >= min_share * whole
    ]
    return whole, sorted(rows, key=lambda m: (m.start_ms, m.end_ms))


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def timeline_of(dump: Path) -> tuple[int, list[Milestone]]:
    """(whole-message traces, their milestones) from the sink's dump file (none: no span came)."""
    if not dump.exists():
        return 0, []
    grouped: dict[str, list[SpanRecord]] = defaultdict(list)
    for request in read_dump(dump):
        for span in flatten(request):
            grouped[span.trace_id].append(span)
    return milestones(list(grouped.values()))
