"""Figures of a run: the printed report and the JSON document (`--json PATH`) for comparing runs."""

from __future__ import annotations

import math
import os
import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.procstat import ProcFigures
from bench.profiler import ProfileSummary, render_summary
from bench.stats import Round, overhead_s, percentile, summary_ms
from bench.timeline import Milestone

SERVICE_ROLES = ("service",)
SYSTEM_ROLES = ("service", "infra")  # what a deployment runs: the services, NATS and Redis
READMODEL_ROLES = ("readmodel",)  # analytics: reads every event, off a reply's path, optional in a deployment
MEASURED_ROLES = ("service", "readmodel", "infra", "bench", "sink")  # everything on the box, bar the profilers


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
    return f"{usable_cores()} cores ({cpu}){mem}, Python {platform.python_version()}"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bucket_quantile(buckets: dict[str, int], q: float) -> str:
    """The upper bound of the histogram bucket holding quantile `q` (cumulative Prometheus buckets)."""
    total = buckets.get("+Inf", 0)
    for le, count in sorted(buckets.items(), key=lambda kv: float(kv[0])):
        if total and count >= q * total:
            return "> 10 s" if le == "+Inf" else f"≤ {float(le) * 1000:g} ms"
    return "n/a"


def server_ack_line(buckets: dict[str, int]) -> str:
    """Server-side callback time (handler start → answer), which leaves out the queue in front of it."""
    return f"p50 {bucket_quantile(buckets, 0.5)}, p99 {bucket_quantile(buckets, 0.99)}"


def cpu_sum(processes: Sequence[ProcFigures], roles: Sequence[str]) -> float:
    return sum(p.cpu_ms or 0.0 for p in processes if p.role in roles)


def ceiling(cores: int, cpu_ms_per_reply: float) -> float:
    """Replies/s the cores could carry if this CPU per reply were all that limited them."""
    return cores * 1000 / cpu_ms_per_reply if cpu_ms_per_reply > 0 else math.inf


@dataclass
class Results:
    scenario: str
    description: str
    mode: str  # "closed" (each user waits for its reply) or "open" (messages at a fixed rate)
    users: int
    planned: int  # messages the load meant to send
    llm_latency_s: float
    retry_rate: float
    rate: float | None = None
    duration_s: float | None = None
    arrivals: str = ""
    replicas: dict[str, int] = field(default_factory=dict)
    backend_nice: int = 0  # CPU_NICE of all but the callback-answering gateways
    otlp: str | None = None  # exporter protocol, None when nothing is exported
    sampler: str = "parentbased_always_on"
    machine: str = field(default_factory=machine)
    cores: int = field(default_factory=usable_cores)
    host_loop_ms: float | None = None  # bench.host_speed: CPU ms of a fixed workload before the run
    host_loop_after_ms: float | None = None  # … and after it (the host's speed drifts within minutes)
    speed_idle_ms: list[float] = field(default_factory=list)  # the probe's slices in the idle window before the load
    speed_load_ms: list[float] = field(default_factory=list)  # … and during the load phase
    sent: int = 0
    replies: int = 0  # messages that got at least one reply
    lost: int = 0
    late: int = 0  # replies that came after --reply-timeout (a closed-loop user had moved on)
    duplicated: int = 0
    unexpected: int = 0  # replies that match no message sent
    order_violations: int = 0
    e2e_alone_s: list[float] = field(default_factory=list)  # messages with no earlier one of their user waiting
    order_overlapping: int = 0  # out of order, but both callbacks were in flight at once: not a fault
    order_examples: list[str] = field(default_factory=list)
    callbacks_failed: int = 0
    retries_sent: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    llm_calls: int = 0
    llm_max_in_flight: int = 0
    wall_s: float = 0.0  # first message sent → last first reply
    stopped_early: str = ""
    ack_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)  # open loop: how late the generator sent
    cpu_window_s: float = 0.0
    idle_window_s: float = 0.0
    processes: list[ProcFigures] = field(default_factory=list)
    box_busy_ms: float | None = None  # the whole machine over the load phase, from /proc/stat
    box_steal_ms: float | None = None
    box_capacity_ms: float | None = None
    sink_spans: int | None = None
    sink_traces: int | None = None
    server_ack: dict[str, int] = field(default_factory=dict)  # gateway histogram: upper bound "le" → count
    redis_calls: dict[str, int] = field(default_factory=dict)  # Redis commands run during the run, by name
    profile_dir: str | None = None
    profiles: list[ProfileSummary] = field(default_factory=list)
    profile_errors: list[str] = field(default_factory=list)
    timeline_traces: int | None = None  # whole-message traces the timeline was read from (--timeline)
    timeline: list[Milestone] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)  # closed loop: the k-th message of every user

    # -- derived -----------------------------------------------------------------------------------

    @property
    def replies_per_s(self) -> float:
        return self.replies / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def overhead_s(self) -> list[float]:
        return overhead_s(self.e2e_s, self.llm_latency_s)

    def cpu_per_reply(self, roles: Sequence[str]) -> float | None:
        return cpu_sum(self.processes, roles) / self.replies if self.replies else None

    # -- text --------------------------------------------------------------------------------------

    def _host_speed_lines(self) -> list[str]:
        """The reference loop's CPU before (and after) the run, when it was measured (bench.host_speed)."""
        if self.host_loop_ms is None:
            return []
        after = f", {self.host_loop_after_ms:.0f} after" if self.host_loop_after_ms is not None else ""
        lines = [
            f"  host speed             reference loop {self.host_loop_ms:.0f} ms of CPU before the run{after}"
            " (~100 on a quiet reference machine; a VM drifts: compare CPU figures at similar values)"
        ]
        if self.speed_load_ms:
            idle = f"; idle just before {percentile(self.speed_idle_ms, 0.5):.0f}" if self.speed_idle_ms else ""
            lines.append(
                f"  … during the load      probe slices p50 {percentile(self.speed_load_ms, 0.5):.0f} "
                f"(p10–p90 {percentile(self.speed_load_ms, 0.1):.0f}–{percentile(self.speed_load_ms, 0.9):.0f}, "
                f"{len(self.speed_load_ms)} slices){idle} (bench.host_speed --probe: a cold slice reads above the "
                "warm loop; compare runs by it)"
            )
        return lines

    def _load_line(self) -> str:
        if self.mode == "open":
            return (
                f"open loop: {self.rate:g} messages/s for {self.duration_s:g} s ({self.arrivals} arrivals) "
                f"from {self.users} users, {self.planned} messages"
            )
        per_user = self.planned // max(self.users, 1)
        return f"closed loop: {self.users} users × {per_user} messages, each sent after the previous reply"

    def _tracing_line(self) -> str:
        ratio = self.sampler.partition("=")[2]
        sampled = f"{float(ratio):.0%} of traces" if ratio else "every trace"
        if self.otlp is None:
            return f"{self.sampler}, spans not exported"
        got = (
            f" — sink received {self.sink_spans} spans of {self.sink_traces} traces"
            if self.sink_spans is not None
            else ""
        )
        return f"{sampled} exported over OTLP ({self.otlp}) to a sink in its own process{got}"

    def render(self) -> str:
        def row(name: str, values: list[float]) -> str:
            s = summary_ms(values)

            def f(v: float | None) -> str:
                return "     n/a" if v is None else f"{v:8.1f}"

            return (
                f"  {name:<22} p50 {f(s['p50'])} ms   p95 {f(s['p95'])} ms   p99 {f(s['p99'])} ms   "
                f"max {f(s['max'])} ms"
            )

        layout = " ".join(f"{s}×{n}" for s, n in self.replicas.items())
        lines = [
            f"wxbot bench — {self.scenario}: {self.description}",
            f"  machine                {self.machine}",
            *self._host_speed_lines(),
            f"  load                   {self._load_line()}; fake LLM {self.llm_latency_s * 1000:.0f} ms, "
            f"WeCom delivers {self.retry_rate:.0%} twice",
            f"  replicas               {layout}; CPU_NICE {self.backend_nice} for all but the callback gateways",
            f"  tracing                {self._tracing_line()}",
            f"  replies/s              {self.replies_per_s:8.1f}   ({self.replies} replies to {self.sent} messages "
            f"in {self.wall_s:.1f} s)",
            row("callback ack", self.ack_s),
            *([f"  … as the gateway saw it {server_ack_line(self.server_ack)}"] if self.server_ack else []),
            row("end-to-end reply", self.e2e_s),
            row("overhead (e2e − LLM)", self.overhead_s),
        ]
        if len(self.e2e_alone_s) != len(self.e2e_s):
            alone = overhead_s(self.e2e_alone_s, self.llm_latency_s)
            lines.append(row(f"  … {len(self.e2e_alone_s)} not queued", alone))
        if self.mode == "open":
            lines.append(row("send lag (generator)", self.send_lag_s))
        elif len(self.rounds) > 1:
            lines.append(f"  rounds                 {self._rounds_line()}")
        lines += [
            f"  lost replies           {self.lost}" + (f"   ({self.late} more came late)" if self.late else ""),
            f"  duplicated replies     {self.duplicated}"
            + (f"   (unexpected: {self.unexpected})" if self.unexpected else ""),
            f"  order violations       {self.order_violations}   (a reply after the reply to a later message of the "
            "same user, sent after this one was acked)"
            + (f" e.g. {'; '.join(self.order_examples)}" if self.order_examples else "")
            + (
                f"; {self.order_overlapping} more out of order whose callbacks overlapped"
                if self.order_overlapping
                else ""
            ),
            f"  failed callbacks       {self.callbacks_failed}   (retried as WeCom does; duplicate deliveries sent: "
            f"{self.retries_sent}) {dict(self.failure_reasons) or ''}",
            f"  LLM calls              {self.llm_calls}   ({self.llm_max_in_flight} in flight at peak)",
        ]
        if self.stopped_early:
            lines.append(f"  STOPPED EARLY          {self.stopped_early}")
        if self.timeline_traces is not None:
            lines += ["", self.render_timeline()]
        lines += ["", self.render_processes()]
        if self.profile_dir is not None:
            lines += ["", self.render_profiles()]
        return "\n".join(lines)

    def _rounds_line(self, shown: int = 6) -> str:
        """Each round's last reply (s from the load's start) and e2e p50 / max: where a closed loop's
        time goes. Of many rounds (`fast` has 20) the first three and the last two; JSON has all."""
        parts = [
            f"#{r.index + 1} done {r.last_reply_s:.2f} s (e2e p50 {r.e2e_p50_s * 1000:.0f} / max "
            f"{r.e2e_max_s * 1000:.0f} ms)"
            for r in self.rounds
        ]
        if len(parts) > shown:
            parts = [*parts[:3], "…", *parts[-2:]]
        return " · ".join(parts)

    def render_timeline(self) -> str:
        lines = [
            f"Where a message's time goes: median over {self.timeline_traces} traced messages, ms from the start "
            "of the callback's answer (span start → end; its own duration p50 / p90)"
        ]
        for m in self.timeline:
            lines.append(
                f"  {m.service:<9} {m.kind:<8} {m.name[:52]:<52} {m.start_ms:8.2f} → {m.end_ms:8.2f}"
                f"   {m.duration_p50_ms:6.2f} / {m.duration_p90_ms:6.2f}"
            )
        if not self.timeline:
            lines.append("  (no whole-message trace reached the sink)")
        return "\n".join(lines)

    def render_processes(self) -> str:
        def num(v: float | None, width: int, digits: int = 1) -> str:
            return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"

        def count(v: int | None) -> str:
            return "-" if v is None else str(v)

        measured = cpu_sum(self.processes, MEASURED_ROLES)
        lines = [
            f"  CPU per delivered reply over the load phase ({self.cpu_window_s:.1f} s, from the first message to "
            f"the end of the drain), idle CPU over {self.idle_window_s:.1f} s before it",
            f"  {'process':<24}{'pid':>8}{'CPU ms':>10}{'ms/reply':>10}{'share':>7}{'kernel':>7}{'idle ms/s':>11}"
            f"   {'RSS MB before → after (peak)':<31}{'fds before → after':<20}syscalls/reply: read write sleep",
        ]

        def proc_row(p: ProcFigures) -> str:
            share = f"{(p.cpu_ms or 0) / measured:6.1%}" if measured and p.role in MEASURED_ROLES else "     -"
            rss = f"{num(p.rss_mb_before, 6)} → {num(p.rss_mb_after, 6)} ({num(p.rss_mb_peak, 6).strip()})"
            fds = f"{count(p.fds_before):>5} → {count(p.fds_after)}"
            calls = f"{num(p.reads_per_reply, 6)}{num(p.writes_per_reply, 6)}{num(p.sleeps_per_reply, 6)}"
            kernel = "      -" if p.kernel_share is None else f"{p.kernel_share:7.0%}"
            return (
                f"  {p.name:<24}{p.pid:>8}{num(p.cpu_ms, 10)}{num(p.cpu_ms_per_reply, 10, 2)} {share}{kernel}"
                f"{num(p.idle_cpu_ms_per_s, 11)}  {rss:<31}{fds:<20}{calls}"
            )

        def sum_row(label: str, roles: Sequence[str]) -> str:
            total = cpu_sum(self.processes, roles)
            per = total / self.replies if self.replies else None
            share = f"{total / measured:6.1%}" if measured else "     -"
            return f"  {label:<32}{num(total, 10)}{num(per, 10, 2)} {share}"

        services = [p for p in self.processes if p.role == "service"]
        readmodels = [p for p in self.processes if p.role == "readmodel"]
        others = [p for p in self.processes if p.role in ("infra", "sink", "bench")]
        tools = [p for p in self.processes if p.role == "profiler"]
        lines += [proc_row(p) for p in services]
        lines.append(sum_row(f"= wxbot services ({len(services)})", SERVICE_ROLES))
        lines += [proc_row(p) for p in readmodels]  # analytics: apart from the reply path's sum
        lines += [proc_row(p) for p in others]
        lines.append(sum_row("= everything measured", MEASURED_ROLES))
        if self.box_busy_ms is not None and self.box_capacity_ms:
            # The profilers run outside the sums but inside the box: take them out of "other" too.
            other = self.box_busy_ms - measured - cpu_sum(self.processes, ("profiler",))
            steal = self.box_steal_ms or 0.0
            lines.append(
                f"  whole box (/proc/stat): {self.box_busy_ms:.0f} ms busy of {self.box_capacity_ms / 1000:.1f} CPU-s "
                f"({self.box_busy_ms / self.box_capacity_ms:.0%}); outside the processes above: {other:.0f} ms "
                f"(interrupts, kernel threads, anything else running); steal: {steal:.0f} ms"
            )
            if other > max(0.1 * measured, 300.0) or steal > max(0.05 * measured, 300.0):
                lines.append("  ! other activity or steal on this box during the run: these figures are disturbed")
        if tools:
            lines.append("  profilers (not in the sums; they take CPU from the same cores):")
            lines += [proc_row(p) for p in tools]
        lines.append("")
        if self.redis_calls and self.replies:
            total = sum(self.redis_calls.values())
            top = sorted(self.redis_calls.items(), key=lambda kv: -kv[1])[:8]
            lines.append(
                f"  Redis commands per reply: {total / self.replies:.2f} ("
                + ", ".join(f"{name} {n / self.replies:.2f}" for name, n in top)
                + "; warm-up and start-up included)"
            )
        for label, roles in (
            ("everything on this box", MEASURED_ROLES),
            ("services + NATS + Redis", SYSTEM_ROLES),
            ("wxbot services alone", SERVICE_ROLES),
        ):
            per = self.cpu_per_reply(roles)
            if per:
                lines.append(
                    f"  ceiling, {label:<24} {self.cores * 1000:.0f} ms / {per:6.2f} ms per reply = "
                    f"{ceiling(self.cores, per):7.1f} replies/s on {self.cores} cores"
                )
        return "\n".join(lines)

    def render_profiles(self) -> str:
        lines = [f"py-spy profiles (speedscope) in {self.profile_dir}/ — top functions by own samples:"]
        for summary in self.profiles:
            lines += ["", render_summary(summary)]
        lines += [f"  ! {error}" for error in self.profile_errors]
        return "\n".join(lines)

    # -- JSON --------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        per_role = {
            "services": self.cpu_per_reply(SERVICE_ROLES),
            "services_nats_redis": self.cpu_per_reply(SYSTEM_ROLES),
            "analytics": self.cpu_per_reply(READMODEL_ROLES),
            "everything": self.cpu_per_reply(MEASURED_ROLES),
        }
        return {
            "scenario": self.scenario,
            "description": self.description,
            "machine": self.machine,
            "cores": self.cores,
            "host_reference_loop_ms": {"before": self.host_loop_ms, "after": self.host_loop_after_ms},
            "host_probe_ms": {
                "idle_p50": round(percentile(self.speed_idle_ms, 0.5), 1) if self.speed_idle_ms else None,
                "load": summary_ms([ms / 1000 for ms in self.speed_load_ms]) if self.speed_load_ms else None,
            },
            "config": {
                "mode": self.mode,
                "users": self.users,
                "planned_messages": self.planned,
                "rate": self.rate,
                "duration_s": self.duration_s,
                "arrivals": self.arrivals or None,
                "llm_latency_s": self.llm_latency_s,
                "retry_rate": self.retry_rate,
                "replicas": self.replicas,
                "backend_nice": self.backend_nice,
                "otlp": self.otlp,
                "sampler": self.sampler,
            },
            "replies_per_s": round(self.replies_per_s, 2),
            "wall_s": round(self.wall_s, 3),
            "sent": self.sent,
            "replies": self.replies,
            "lost": self.lost,
            "late": self.late,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "order_violations": self.order_violations,
            "order_overlapping": self.order_overlapping,
            "order_examples": self.order_examples,
            "callbacks_failed": self.callbacks_failed,
            "retries_sent": self.retries_sent,
            "failure_reasons": dict(self.failure_reasons),
            "llm_calls": self.llm_calls,
            "llm_max_in_flight": self.llm_max_in_flight,
            "stopped_early": self.stopped_early or None,
            "latency_ms": {
                "callback_ack": summary_ms(self.ack_s),
                "e2e": summary_ms(self.e2e_s),
                "overhead": summary_ms(self.overhead_s),
                "overhead_not_queued": summary_ms(overhead_s(self.e2e_alone_s, self.llm_latency_s)),
                "send_lag": summary_ms(self.send_lag_s) if self.mode == "open" else None,
            },
            "rounds": [asdict(r) for r in self.rounds] or None,
            "server_ack_buckets": self.server_ack or None,
            "redis_calls": self.redis_calls or None,
            "sink": {"spans": self.sink_spans, "traces": self.sink_traces} if self.otlp else None,
            "cpu_window_s": round(self.cpu_window_s, 3),
            "idle_window_s": round(self.idle_window_s, 3),
            "box_ms": {"busy": self.box_busy_ms, "steal": self.box_steal_ms, "capacity": self.box_capacity_ms},
            "cpu_ms_per_reply": per_role,
            "ceiling_replies_per_s": {k: (ceiling(self.cores, v) if v else None) for k, v in per_role.items()},
            "processes": [asdict(p) for p in self.processes],
            "profiles": [asdict(s) for s in self.profiles] if self.profile_dir is not None else None,
            "profile_dir": self.profile_dir,
            "timeline": (
                {"traces": self.timeline_traces, "spans": [asdict(m) for m in self.timeline]}
                if self.timeline_traces is not None
                else None
            ),
        }
