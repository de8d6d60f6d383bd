"""`make soak`: a long steady load; does anything grow, leak or fall behind?

The stack `make run` starts (supervised, Redis persisting, by default two replicas of every
service), a fake WeCom and a fake LLM, an open-loop load (default 20 messages/s for 30 minutes
from 50 users, LLM 300 ms). Every `--sample-every` seconds each process is read from /proc (RSS,
open fds) and every durable consumer's lag from NATS. The verdict: each service's RSS at the end
of the load within 10 % of its RSS after the warm-up, open fds flat, every consumer's lag back to
zero once the replies are in, no reply lost, duplicated or out of order, no dead letter, no
restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.lag import Lag, left, read_lag, wait_for_no_lag
from bench.load import CORP_ID, SECRET, Generator, Tracker, drain, replicas_of, service_env, warm_up
from bench.procstat import sample_pid
from bench.report import Results, machine
from bench.stats import Sent, check_order, summary_ms
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.system import Stack, StackConfig

MAX_RSS_GROWTH = 0.10
# Open fds are judged as a trend: pools (Redis, HTTP) open connections up to the highest concurrency
# they have met, which in a long run can come any time and is not a leak; a leak keeps climbing.
# So the end of the load may hold at most FD_SLACK more than the most seen in its first half.
FD_SLACK = 3
LLM_RECORD_LIMIT = 1000


@dataclass
class ProcessTrace:
    """One process over the run: RSS (MB) and open fds at each sample, after the warm-up, at the end."""

    name: str
    role: str  # "service" or "infra"
    pid: int
    rss_mb: list[float | None] = field(default_factory=list)
    fds: list[int | None] = field(default_factory=list)
    rss_warm_mb: float | None = None
    rss_end_mb: float | None = None
    rss_peak_mb: float | None = None
    fds_warm: int | None = None
    fds_end: int | None = None
    fds_first_half: int | None = None  # the most open from the warm-up to the middle of the load

    @property
    def growth(self) -> float | None:
        if not self.rss_warm_mb or self.rss_end_mb is None:
            return None
        return self.rss_end_mb / self.rss_warm_mb - 1

    @property
    def rss_ok(self) -> bool:
        return self.role != "service" or (self.growth is not None and self.growth < MAX_RSS_GROWTH)

    @property
    def fds_ok(self) -> bool:
        base = max((n for n in (self.fds_warm, self.fds_first_half) if n is not None), default=None)
        return base is not None and self.fds_end is not None and self.fds_end <= base + FD_SLACK

    def read(self) -> tuple[float | None, int | None]:
        sample = sample_pid(self.pid)
        if sample is None:
            return None, None
        rss = None if sample.rss_kb is None else sample.rss_kb / 1024
        if sample.hwm_kb is not None:
            self.rss_peak_mb = sample.hwm_kb / 1024
        return rss, sample.fds


@dataclass
class SoakFigures:
    config: dict[str, Any]
    processes: list[ProcessTrace] = field(default_factory=list)
    sample_at_s: list[float] = field(default_factory=list)  # from the start of the load
    warm_at_s: float = 0.0
    max_lag: int = 0  # the most pending + ack pending seen at any sample
    lag_after: Lag = field(default_factory=dict)
    dead_letters: int | None = None
    restarts: int = 0
    sent: int = 0
    replies: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    notices: int = 0
    order_violations: int = 0
    e2e_ms: dict[str, float | None] = field(default_factory=dict)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    machine: str = field(default_factory=machine)

    @property
    def passed(self) -> bool:
        return (
            all(p.rss_ok and p.fds_ok for p in self.processes if p.role == "service")
            and not left(self.lag_after)
            and self.lost == self.duplicated == self.order_violations == self.refused == 0
            and not self.dead_letters
            and self.restarts == 0
        )

    def render(self) -> str:
        c = self.config
        lines = [
            f"wxbot soak — {c['rate']:g} messages/s for {c['duration']:g} s from {c['users']} users, LLM "
            f"{c['llm_latency'] * 1000:.0f} ms, replicas {' '.join(c['replicas'])}, supervised",
            f"  machine     {self.machine}",
            f"  replies     {self.replies} to {self.sent} messages; lost {self.lost}, duplicated {self.duplicated}, "
            f"out of order {self.order_violations}, refused {self.refused}, notices {self.notices}; e2e p50 "
            f"{_ms(self.e2e_ms.get('p50'))} p99 {_ms(self.e2e_ms.get('p99'))} max {_ms(self.e2e_ms.get('max'))} ms",
            f"  lag         at most {self.max_lag} pending at a sample; after the drain: "
            + ", ".join(f"{d} {v['pending']}/{v['ack_pending']}" for d, v in self.lag_after.items())
            + f"; dead letters {self.dead_letters}; restarts {self.restarts}",
            "",
            f"  {'process':<14}{'pid':>8}   {'RSS MB after warm-up (' + f'{self.warm_at_s:.0f} s) → end':<32}"
            f"{'growth':>8}{'peak MB':>9}   {'fds warm → ½ max → end':<24}(NATS and Redis: shown, not judged)",
        ]
        for p in self.processes:
            growth = "-" if p.growth is None else f"{p.growth:+.1%}"
            flag = "" if p.role != "service" or (p.rss_ok and p.fds_ok) else "   ✗"
            lines.append(
                f"  {p.name:<14}{p.pid:>8}   {_mb(p.rss_warm_mb):>10} → {_mb(p.rss_end_mb):<18}{growth:>8}"
                f"{_mb(p.rss_peak_mb):>9}   {_n(p.fds_warm):>5} → {_n(p.fds_first_half):>5} → {_n(p.fds_end):<8}{flag}"
            )
        lines += ["", "  RSS MB over the run (samples):"]
        picks = _spread(len(self.sample_at_s), 8)
        lines.append(f"  {'':<14}" + "".join(f"{self.sample_at_s[i]:>8.0f}s" for i in picks))
        for p in self.processes:
            lines.append(f"  {p.name:<14}" + "".join(f"{_mb(p.rss_mb[i]):>9}" for i in picks))
        lines.append(
            f"\n  verdict     {'PASS' if self.passed else 'FAIL'}: RSS growth after warm-up < {MAX_RSS_GROWTH:.0%} "
            f"per service, fds flat (end ≤ first half's most + {FD_SLACK}), no lag left, nothing lost, duplicated, "
            "out of order or refused, no dead letter, no restart"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        for item, p in zip(data["processes"], self.processes, strict=True):
            item["growth"] = p.growth
        return data


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _spread(n: int, k: int) -> list[int]:
    """Up to k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--arrivals", choices=("poisson", "even"), default="poisson")
    p.add_argument("--llm-latency", type=float, default=0.3)
    p.add_argument("--retry-rate", type=float, default=0.1, help="share of callbacks WeCom delivers twice")
    p.add_argument(
        "--replicas", nargs="*", default=["2"], help="replicas: a count for every service, and/or service=count"
    )
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="seconds of load before the reference sample (default: 10 %% of the duration, 30–300 s)",
    )
    p.add_argument("--sample-every", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--callback-timeout", type=float, default=5.0)
    p.add_argument("--reply-timeout", type=float, default=120.0)
    p.add_argument("--drain-quiet", type=float, default=5.0)
    p.add_argument("--max-drain", type=float, default=120.0)
    p.add_argument("--warmup", type=int, default=4, help="messages answered before the load, from users of their own")
    p.add_argument("--json", metavar="PATH")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.warmup_s is None:
        args.warmup_s = min(300.0, max(30.0, 0.1 * args.duration))
    args.messages, args.think_time = 1, 0.0  # closed-loop knobs of the generator, unused
    return args


async def run_soak(args: argparse.Namespace) -> SoakFigures:
    tracker = Tracker()
    wecom = FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET, on_message=tracker.on_message)
    llm = FakeLLM(latency_s=args.llm_latency, record_limit=LLM_RECORD_LIMIT)
    results = Results("soak", "", "open", args.users, 0, args.llm_latency, args.retry_rate, rate=args.rate)
    figures = SoakFigures(config={k: v for k, v in vars(args).items() if k != "json"})
    await wecom.start()
    await llm.start()
    try:
        with tempfile.TemporaryDirectory(prefix="wxbot-soak-") as tmp:
            config = StackConfig(
                run_dir=Path(tmp),
                ports="free",
                extra_env=service_env(wecom, llm),
                replicas=replicas_of(args, default=2),
                supervise=True,
                persist=True,
            )
            async with Stack(config) as stack:
                await _drive(args, stack, tracker, results, figures, wecom, llm)
    finally:
        await llm.stop()
        await wecom.stop()
    _replies(figures, tracker, results)
    return figures


async def _drive(
    args: argparse.Namespace,
    stack: Stack,
    tracker: Tracker,
    results: Results,
    figures: SoakFigures,
    wecom: FakeWeCom,
    llm: FakeLLM,
) -> None:
    figures.processes = [
        ProcessTrace(r.child.name, "service", r.child.pid) for r in stack.replicas if r.child.pid is not None
    ]
    figures.processes += [
        ProcessTrace(name, "infra", child.pid)
        for name, child in (("nats-server", stack.nats.child), ("redis-server", stack.redis.child))
        if child.pid is not None
    ]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=args.callback_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(args, session, stack.gateway_urls, wecom, llm)
        generator = Generator(args, session, stack.gateway_urls, tracker, results)
        start = time.perf_counter()
        load = asyncio.create_task(generator.open_loop())
        warm_done = False
        plan = itertools.chain(
            [0.0, args.warmup_s], itertools.count(args.warmup_s + args.sample_every, args.sample_every)
        )
        for at in plan:
            with contextlib.suppress(TimeoutError):  # the sampling period, not a wait for a condition
                await asyncio.wait_for(asyncio.shield(load), max(0.0, start + at - time.perf_counter()))
            if load.done():
                break
            await _sample(figures, stack, time.perf_counter() - start)
            if at == args.warmup_s:
                warm_done = True
                figures.warm_at_s = figures.sample_at_s[-1]
                for p in figures.processes:
                    p.rss_warm_mb, p.fds_warm = p.rss_mb[-1], p.fds[-1]
        await load  # the last sends (and their replies) are in: this is the end of the load
        await _sample(figures, stack, time.perf_counter() - start)
        middle = (figures.warm_at_s + figures.sample_at_s[-1]) / 2
        first_half = [i for i, t in enumerate(figures.sample_at_s) if figures.warm_at_s <= t <= middle]
        for p in figures.processes:
            p.rss_end_mb, p.fds_end = p.rss_mb[-1], p.fds[-1]
            if not warm_done:  # a run shorter than its warm-up: compare with the first sample
                p.rss_warm_mb, p.fds_warm = p.rss_mb[0], p.fds[0]
            p.fds_first_half = max((n for i in first_half if (n := p.fds[i]) is not None), default=None)
        await drain(tracker, args.drain_quiet, args.max_drain)
        figures.lag_after, figures.dead_letters = await wait_for_no_lag(stack.nats.url, args.max_drain)
    figures.restarts = len(stack.supervisor.history)


async def _sample(figures: SoakFigures, stack: Stack, at_s: float) -> None:
    figures.sample_at_s.append(at_s)
    for p in figures.processes:
        rss, fds = p.read()
        p.rss_mb.append(rss)
        p.fds.append(fds)
    with contextlib.suppress(Exception):  # a missed lag reading is not a failed run
        lag, _ = await read_lag(stack.nats.url)
        figures.max_lag = max(figures.max_lag, left(lag))


def _replies(figures: SoakFigures, tracker: Tracker, results: Results) -> None:
    figures.sent = results.sent
    figures.replies = len(tracker.arrived_at)
    figures.refused = sum(1 for t in tracker.sent_at if t not in tracker.acked_at and t not in tracker.arrived_at)
    figures.lost = sum(1 for t in tracker.acked_at if t not in tracker.arrived_at)
    figures.duplicated = sum(c - 1 for c in tracker.counts.values() if c > 1) + tracker.unexpected
    figures.notices = len(tracker.notice_tags)
    sent = {
        owner: Sent(tracker.sent_at[tag], tracker.acked_at.get(tag, math.inf))
        for tag, owner in tracker.owner.items()
        if tag in tracker.sent_at
    }
    figures.order_violations = check_order(tracker.per_user, sent).violations
    figures.e2e_ms = summary_ms([tracker.arrived_at[t] - tracker.sent_at[t] for t in tracker.arrived_at])
    figures.failure_reasons = dict(results.failure_reasons)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        os.environ.pop(var, None)
    figures = uvloop.run(run_soak(args))
    print(figures.render(), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nfigures written to {path}")
    raise SystemExit(0 if figures.passed else 1)


if __name__ == "__main__":
    main()
