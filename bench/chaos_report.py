"""Figures of a chaos run: for each fault, what happened to the messages sent around it.

A fault's window holds the messages sent from `LEAD_S` before its injection (those then in flight
are the ones a crash hits) until `LEAD_S` before the next fault's; the baseline window holds those
sent before the first fault. Per window: messages sent, refused (WeCom gave up after its retries),
answered, answered with a notice (an apology) instead, lost (accepted, never answered), duplicated,
out of order (`bench.stats.check_order`), end-to-end latency, and three times measured from the
injection:

- first reply: until the first reply to a message sent after the injection arrived;
- recovered: until the first message sent after the injection from which on every message sent
  within `SUSTAIN_S` got a real answer (no notice) within the threshold (2 × the baseline's p99);
- disturbed: until the last reply that came later than the threshold (or was a notice) arrived,
  of the messages sent before the recovery (those in flight when the fault hit included) — how
  long users saw the fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bench.report import machine
from bench.stats import Sent, check_order, percentile, summary_ms

LEAD_S = 2.0
SUSTAIN_S = 5.0
THRESHOLD_FACTOR = 2.0
MIN_THRESHOLD_S = 0.5  # a floor, so that a quiet baseline does not make every hiccup a fault


class Replies(Protocol):
    """What the analysis reads of `bench.load.Tracker`."""

    @property
    def owner(self) -> Mapping[str, tuple[str, int]]: ...
    @property
    def sent_at(self) -> Mapping[str, float]: ...
    @property
    def acked_at(self) -> Mapping[str, float]: ...
    @property
    def arrived_at(self) -> Mapping[str, float]: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def per_user(self) -> Mapping[str, Sequence[int]]: ...
    @property
    def notice_tags(self) -> AbstractSet[str]: ...


@dataclass(frozen=True)
class FaultMark:
    """One injected fault; times on the load generator's clock (time.perf_counter)."""

    name: str  # what was done, e.g. "SIGKILL nlp-1"
    injected_at: float
    healed_at: float  # the process is ready again, the outage or storm is over
    detail: str = ""
    downtime_s: float | None = None  # a killed process: from its exit until it was ready again (supervisor)

    @property
    def duration_s(self) -> float:
        """How long the fault lasted: a killed process down, an outage or a storm."""
        return self.downtime_s if self.downtime_s is not None else self.healed_at - self.injected_at


@dataclass
class Window:
    name: str
    detail: str
    start_s: float  # from the start of the load
    end_s: float
    fault_s: float | None  # how long the fault itself lasted (kill: until ready again)
    sent: int = 0
    refused: int = 0
    answered: int = 0
    notices: int = 0
    lost: int = 0
    duplicated: int = 0
    order_violations: int = 0
    order_examples: list[str] = field(default_factory=list)
    e2e_ms: dict[str, float | None] = field(default_factory=dict)
    first_reply_s: float | None = None
    recovered_s: float | None = None
    disturbed_s: float | None = None

    @property
    def clean(self) -> bool:
        """Every message answered once (a reply or a notice), in order, and none refused."""
        return self.lost == self.duplicated == self.order_violations == self.refused == 0


@dataclass
class ChaosFigures:
    config: dict[str, Any]
    threshold_s: float
    windows: list[Window]
    unexpected: int = 0  # replies to users that had no unanswered message
    notice_texts: dict[str, int] = field(default_factory=dict)
    dead_letters: int | None = None
    lag_after: dict[str, dict[str, int]] = field(default_factory=dict)  # durable -> pending, ack_pending
    restarts: list[dict[str, Any]] = field(default_factory=list)  # the supervisor's history
    failure_reasons: dict[str, int] = field(default_factory=dict)
    supervisor_log: list[str] = field(default_factory=list)
    log_events: dict[str, int] = field(default_factory=dict)  # "service level event" -> count
    machine: str = field(default_factory=machine)

    @property
    def lag_left(self) -> int:
        return sum(v.get("pending", 0) + v.get("ack_pending", 0) for v in self.lag_after.values())

    @property
    def passed(self) -> bool:
        return (
            all(w.clean for w in self.windows) and self.unexpected == 0 and not self.dead_letters and not self.lag_left
        )

    def to_json(self) -> dict[str, Any]:
        windows = []
        for w in self.windows:
            item = asdict(w)
            item["clean"] = w.clean
            windows.append(item)
        return {
            "machine": self.machine,
            "config": self.config,
            "threshold_s": round(self.threshold_s, 3),
            "passed": self.passed,
            "windows": windows,
            "unexpected": self.unexpected,
            "notice_texts": self.notice_texts,
            "dead_letters": self.dead_letters,
            "lag_after": self.lag_after,
            "restarts": self.restarts,
            "failure_reasons": self.failure_reasons,
            "supervisor_log": self.supervisor_log,
            "log_events": self.log_events,
        }

    def render(self) -> str:
        c = self.config
        lines = [
            f"wxbot chaos — {c.get('description', '')}",
            f"  machine     {self.machine}",
            f"  threshold   {self.threshold_s * 1000:.0f} ms end-to-end ({THRESHOLD_FACTOR:g} × the baseline p99, "
            f"at least {MIN_THRESHOLD_S * 1000:.0f} ms); recovered = every message sent for {SUSTAIN_S:g} s "
            "answered within it",
            "",
            f"  {'window':<26}{'sent':>6}{'refused':>8}{'lost':>6}{'dup':>5}{'order':>6}{'notices':>8}"
            f"{'p99 ms':>9}{'worst ms':>10}{'fault s':>9}{'1st reply':>10}{'recovered':>10}{'disturbed':>10}",
        ]

        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        for w in self.windows:
            lines.append(
                f"  {w.name:<26}{w.sent:>6}{w.refused:>8}{w.lost:>6}{w.duplicated:>5}{w.order_violations:>6}"
                f"{w.notices:>8}{ms(w.e2e_ms.get('p99')):>9}{ms(w.e2e_ms.get('max')):>10}{sec(w.fault_s):>9}"
                f"{sec(w.first_reply_s):>10}{sec(w.recovered_s):>10}{sec(w.disturbed_s):>10}"
                + ("" if w.clean else "   ✗")
            )
        lines.append("")
        for w in self.windows:
            if w.detail:
                lines.append(f"  {w.name}: {w.detail}")
            if w.order_examples:
                lines.append(f"    out of order, e.g. {'; '.join(w.order_examples)}")
        if self.notice_texts:
            texts = ", ".join(f"{n}× {t[:60]!r}" for t, n in self.notice_texts.items())
            lines.append(f"  notices     {texts}")
        if self.log_events:
            events = ", ".join(f"{k} ×{n}" for k, n in self.log_events.items())
            lines.append(f"  logged      {events}")
        if self.failure_reasons:
            lines.append(f"  callbacks that failed (WeCom retried them): {self.failure_reasons}")
        lag = ", ".join(f"{d} {v.get('pending', 0)}/{v.get('ack_pending', 0)}" for d, v in self.lag_after.items())
        lines += [
            f"  after the drain: consumer lag (pending/ack pending) {lag or 'n/a'}; dead letters {self.dead_letters}; "
            f"replies matching no message {self.unexpected}",
            f"  verdict     {'PASS' if self.passed else 'FAIL'}: every message answered exactly once (a reply or one "
            "notice), in order, nothing refused, no dead letter, no lag left",
        ]
        return "\n".join(lines)


def baseline_threshold(e2e_s: Sequence[float]) -> float:
    p99 = percentile(e2e_s, 0.99)
    return MIN_THRESHOLD_S if math.isnan(p99) else max(MIN_THRESHOLD_S, THRESHOLD_FACTOR * p99)


def _recovered(
    replies: Replies, after: list[str], injected_at: float, threshold_s: float, window_end: float
) -> float | None:
    """Seconds from the injection to the send of the first message from which on every message sent
    within SUSTAIN_S (or until the window ends) was answered, without a notice, within the threshold."""

    def good(tag: str) -> bool:
        arrived = replies.arrived_at.get(tag)
        return arrived is not None and tag not in replies.notice_tags and arrived - replies.sent_at[tag] <= threshold_s

    ok = [good(t) for t in after]
    times = [replies.sent_at[t] for t in after]
    bad_after = [i for i, g in enumerate(ok) if not g]  # indices of bad messages
    j = 0  # index into bad_after: the first bad message at or after i
    for i, start in enumerate(times):
        while j < len(bad_after) and bad_after[j] < i:
            j += 1
        horizon = min(start + SUSTAIN_S, window_end)
        if j < len(bad_after) and times[bad_after[j]] < horizon:
            continue
        return start - injected_at
    return None


def analyse(
    replies: Replies, marks: Sequence[FaultMark], load_start: float, load_end: float, config: dict[str, Any]
) -> ChaosFigures:
    """Split the run into the baseline and one window per fault, and measure each."""
    tags = sorted(replies.sent_at, key=replies.sent_at.__getitem__)
    bounds = [load_start] + [m.injected_at - LEAD_S for m in marks] + [math.inf]
    sent = {
        owner: Sent(replies.sent_at[tag], replies.acked_at.get(tag, math.inf))
        for tag, owner in replies.owner.items()
        if tag in replies.sent_at
    }
    order = check_order(replies.per_user, sent, limit=10**6)
    tag_of = {owner: tag for tag, owner in replies.owner.items()}
    late = [tag_of[v] for v in order.late if v in tag_of]
    examples = dict(zip(late, order.examples, strict=False))
    baseline_tags = [t for t in tags if replies.sent_at[t] < bounds[1]]
    baseline_e2e = [replies.arrived_at[t] - replies.sent_at[t] for t in baseline_tags if t in replies.arrived_at]
    threshold = baseline_threshold(baseline_e2e)
    figures = ChaosFigures(config=config, threshold_s=threshold, windows=[])
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        mine = [t for t in tags if lo <= replies.sent_at[t] < hi]
        mark = marks[k - 1] if k > 0 else None
        window = Window(
            name=mark.name if mark else "baseline (no fault)",
            detail=mark.detail if mark else "",
            start_s=lo - load_start,
            end_s=min(hi, load_end) - load_start,
            fault_s=None
            if mark is None
            else (mark.downtime_s if mark.downtime_s is not None else mark.healed_at - mark.injected_at),
        )
        _fill(window, replies, mine, late, examples)
        if mark is not None:
            _times(window, replies, mine, mark, threshold, min(hi, load_end))
        figures.windows.append(window)
    return figures


def _fill(window: Window, replies: Replies, mine: list[str], late: list[str], examples: dict[str, str]) -> None:
    e2e = []
    for tag in mine:
        window.sent += 1
        accepted = tag in replies.acked_at
        arrived = replies.arrived_at.get(tag)
        if not accepted and arrived is None:
            window.refused += 1
            continue
        if arrived is None:
            window.lost += 1
            continue
        e2e.append(arrived - replies.sent_at[tag])
        window.duplicated += max(0, replies.counts.get(tag, 0) - 1)
        if tag in replies.notice_tags:
            window.notices += 1
        else:
            window.answered += 1
    ours = set(mine)
    mine_late = [t for t in late if t in ours]
    window.order_violations = len(mine_late)
    window.order_examples = [examples[t] for t in mine_late if t in examples][:3]
    window.e2e_ms = summary_ms(e2e)


def _times(window: Window, replies: Replies, mine: list[str], mark: FaultMark, threshold: float, end: float) -> None:
    after = [t for t in mine if replies.sent_at[t] >= mark.injected_at]
    firsts = [replies.arrived_at[t] for t in after if t in replies.arrived_at and t not in replies.notice_tags]
    window.first_reply_s = min(firsts) - mark.injected_at if firsts else None
    window.recovered_s = _recovered(replies, after, mark.injected_at, threshold, end)
    until = math.inf if window.recovered_s is None else mark.injected_at + window.recovered_s
    bad = [
        replies.arrived_at[t]
        for t in mine
        if t in replies.arrived_at
        and replies.sent_at[t] < until  # a late reply after the recovery is noise, not this fault
        and (t in replies.notice_tags or replies.arrived_at[t] - replies.sent_at[t] > threshold)
    ]
    window.disturbed_s = max(0.0, max(bad) - mark.injected_at) if bad else 0.0
