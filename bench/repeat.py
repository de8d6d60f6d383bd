"""The same run several times, and what the runs say together.

On a shared or virtual machine one run's replies/s moves by ±5 % from minute to minute (the host's
speed drifts; `bench.host_speed` shows it), which is as much as most single changes are worth. A
figure worth quoting is the median of several runs with its spread, each run on a fresh stack.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Figures = Mapping[str, Any]  # one run's `Results.to_json()`


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None

    def render(self, unit: str, digits: int = 1) -> str:
        value = f"{self.median:.{digits}f}{' ' + unit if unit else ''}"
        if self.low == self.high:
            return value
        return f"{value} (median; {self.low:.{digits}f}–{self.high:.{digits}f})"

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def _present(runs: Sequence[Figures], pick: Callable[[Figures], Any]) -> list[float]:
    values = []
    for run in runs:
        try:
            value = pick(run)
        except (KeyError, TypeError):
            continue
        if isinstance(value, int | float):
            values.append(float(value))
    return values


# (label, unit, digits, how to read it from one run's figures)
_ROWS: tuple[tuple[str, str, int, Callable[[Figures], Any]], ...] = (
    ("replies/s", "", 1, lambda r: r["replies_per_s"]),
    ("callback ack p99", "ms", 1, lambda r: r["latency_ms"]["callback_ack"]["p99"]),
    ("overhead p50, not queued", "ms", 1, lambda r: r["latency_ms"]["overhead_not_queued"]["p50"]),
    ("overhead p99, not queued", "ms", 1, lambda r: r["latency_ms"]["overhead_not_queued"]["p99"]),
    ("CPU per reply, services", "ms", 2, lambda r: r["cpu_ms_per_reply"]["services"]),
    ("CPU per reply, everything", "ms", 2, lambda r: r["cpu_ms_per_reply"]["everything"]),
    ("host speed before the run", "ms", 0, lambda r: r["host_reference_loop_ms"]["before"]),
)


def summary(runs: Sequence[Figures]) -> dict[str, Any]:
    """Median and range of each headline figure, and the runs' losses, duplicates and order faults summed."""
    spreads = {label: Spread.of(_present(runs, pick)) for label, _, _, pick in _ROWS}
    return {
        "runs": len(runs),
        "figures": {label: spread.to_json() for label, spread in spreads.items() if spread is not None},
        "each_run_replies_per_s": _present(runs, lambda r: r["replies_per_s"]),
        "lost": sum(int(r.get("lost", 0)) for r in runs),
        "duplicated": sum(int(r.get("duplicated", 0)) for r in runs),
        "order_violations": sum(int(r.get("order_violations", 0)) for r in runs),
    }


def render(runs: Sequence[Figures]) -> str:
    """The summary as the report's closing lines (read from `summary`, not computed again)."""
    total = summary(runs)
    lines = [f"Over {len(runs)} runs, each on a fresh stack:"]
    for label, unit, digits, _ in _ROWS:
        figure = total["figures"].get(label)
        if figure is not None:
            spread = Spread(figure["median"], figure["min"], figure["max"])
            lines.append(f"  {label:<28} {spread.render(unit, digits)}")
    each = ", ".join(f"{v:.1f}" for v in total["each_run_replies_per_s"])
    lines.append(f"  {'each run, replies/s':<28} {each}")
    lines.append(
        f"  {'lost / duplicated / order':<28} {total['lost']} / {total['duplicated']} / {total['order_violations']}"
    )
    return "\n".join(lines)
