"""`make chaos`: faults one after another under a steady load, and what each did to the replies.

A supervised stack as `make run` starts it (Redis persisting with `appendfsync everysec`, every
process restarted when it dies), two replicas of every service, a fake WeCom and a fake LLM. An
open-loop load (default 50 users, 50 messages/s, LLM 300 ms, WeCom retrying failed callbacks
and delivering 10 % twice) runs for the whole run; after a baseline, each fault is injected in
turn (`bench.faults`), with a quiet period after it ends. Once every reply has come and every
consumer has caught up, each fault's messages are checked (`bench.chaos_report`): every one
answered exactly once (a reply or one notice), none lost, none duplicated, each conversation
in order; with the worst latency and the time to recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.chaos_report import ChaosFigures, FaultMark, analyse
from bench.faults import FAULTS, FaultSettings, Injector
from bench.lag import wait_for_no_lag
from bench.load import CORP_ID, SECRET, Generator, Tracker, drain, replicas_of, service_env, warm_up
from bench.report import Results
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.system import Stack, StackConfig

LLM_RECORD_LIMIT = 1000  # the fake LLM keeps only the latest requests: a long run would hold every history


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=int, default=50, help="simulated users (messages are spread over them)")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second, for the whole run")
    p.add_argument("--arrivals", choices=("poisson", "even"), default="poisson")
    p.add_argument("--llm-latency", type=float, default=0.3, help="fake LLM answer time, seconds")
    p.add_argument("--retry-rate", type=float, default=0.1, help="share of callbacks WeCom delivers twice")
    p.add_argument(
        "--replicas", nargs="*", default=["2"], help="replicas: a count for every service, and/or service=count"
    )
    p.add_argument(
        "--faults",
        nargs="*",
        choices=FAULTS,
        default=list(FAULTS),
        help="faults in the order given (default: all): a service name SIGKILLs one of its replicas "
        "(context: the one holding the projection lease); nats, redis SIGKILL the server; redis-loss: SIGKILL "
        "redis-server and lose its last second of writes (a machine crash under appendfsync everysec); wecom: "
        "the WeCom API refuses connections; llm: a 429 storm",
    )
    p.add_argument("--baseline", type=float, default=20.0, help="seconds of load before the first fault")
    p.add_argument("--quiet", type=float, default=40.0, help="seconds after a fault is over before the next")
    p.add_argument("--wecom-outage", type=float, default=30.0, help="seconds the WeCom API refuses connections")
    p.add_argument("--llm-storm", type=float, default=10.0, help="seconds every LLM call answers 429")
    p.add_argument("--retry-after", type=float, default=2.0, help="Retry-After of the 429s, seconds")
    p.add_argument("--redis-loss", type=float, default=1.0, help="redis-loss: seconds of Redis writes the crash loses")
    p.add_argument("--callback-timeout", type=float, default=5.0, help="WeCom drops a callback after this long")
    p.add_argument("--reply-timeout", type=float, default=120.0, help="stop waiting for a reply after this long")
    p.add_argument("--drain-quiet", type=float, default=5.0, help="seconds without replies that end the run")
    p.add_argument("--max-drain", type=float, default=180.0, help="the longest wait for the last replies")
    p.add_argument("--warmup", type=int, default=4, help="messages answered before the load, from users of their own")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the stack's data here (default: a temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    args.duration = None  # the load runs until the last fault's quiet period is over
    args.messages = 1  # (closed-loop knobs the generator has; unused in an open loop)
    args.think_time = 0.0
    return args


def describe(args: argparse.Namespace) -> str:
    layout = " ".join(f"{service}×{n}" for service, n in replicas_of(args, default=2).items())
    return (
        f"{layout}, supervised, Redis appendfsync everysec; open loop {args.rate:g} messages/s from "
        f"{args.users} users ({args.arrivals}), LLM {args.llm_latency * 1000:.0f} ms, WeCom delivers "
        f"{args.retry_rate:.0%} twice; faults: {', '.join(args.faults)}, {args.quiet:g} s apart"
    )


async def run_chaos(args: argparse.Namespace) -> ChaosFigures:
    """One whole chaos run: stack, load, faults, drain, figures."""
    tracker = Tracker()
    wecom = FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET, on_message=tracker.on_message)
    llm = FakeLLM(latency_s=args.llm_latency, record_limit=LLM_RECORD_LIMIT)
    results = Results("chaos", "", "open", args.users, 0, args.llm_latency, args.retry_rate, rate=args.rate)
    await wecom.start()
    await llm.start()
    try:
        with contextlib.ExitStack() as cleanup:
            run_dir = args.run_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="wxbot-chaos-")))
            config = StackConfig(
                run_dir=run_dir,
                ports="free",
                extra_env=service_env(wecom, llm),
                replicas=replicas_of(args, default=2),
                supervise=True,
                persist=True,
            )
            async with Stack(config) as stack:
                figures = await _drive(args, stack, tracker, results, wecom, llm)
    finally:
        await llm.stop()
        await wecom.stop()
    return figures


async def _drive(
    args: argparse.Namespace, stack: Stack, tracker: Tracker, results: Results, wecom: FakeWeCom, llm: FakeLLM
) -> ChaosFigures:
    settings = FaultSettings(args.wecom_outage, args.llm_storm, args.retry_after, args.redis_loss)
    injector = Injector(stack, wecom, llm, settings)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=args.callback_timeout)
    marks: list[FaultMark] = []
    injector.start()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await warm_up(args, session, stack.gateway_urls, wecom, llm)
            generator = Generator(args, session, stack.gateway_urls, tracker, results)
            stop = asyncio.Event()
            load_start = time.perf_counter()
            load = asyncio.create_task(generator.open_loop(stop))
            try:
                await _pause(load, args.baseline)
                for fault in args.faults:
                    mark = await injector.run(fault)
                    marks.append(mark)
                    print(f"chaos| {mark.name}: {mark.detail}", flush=True)
                    await _pause(load, args.quiet)
            finally:
                stop.set()
                load_end = time.perf_counter()
                await load
            await drain(tracker, args.drain_quiet, args.max_drain)
            lag, dead = await wait_for_no_lag(stack.nats.url, args.max_drain)
    finally:
        await injector.stop()
    config = {
        "description": describe(args),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"},
    }
    figures = analyse(tracker, marks, load_start, load_end, config)
    figures.unexpected = tracker.unexpected
    figures.notice_texts = dict(tracker.notices)
    figures.lag_after = lag
    figures.dead_letters = dead
    figures.failure_reasons = dict(results.failure_reasons)
    figures.restarts = [_restart_json(asdict(r)) for r in stack.supervisor.history]
    figures.supervisor_log = list(stack.supervisor.log)
    figures.log_events = log_digest(stack)
    return figures


def log_digest(stack: Stack) -> dict[str, int]:
    """Warnings and errors the services logged, counted by service, level and event (of the last
    lines each process kept): what the faults looked like from the inside."""
    counts: Counter[str] = Counter()
    for replica in stack.replicas:
        for line in replica.child.lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
                counts[f"{replica.service} {record['level']} {record.get('event', '?')}"] += 1
    return dict(sorted(counts.items()))


def _restart_json(item: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in item.items()}


async def _pause(load: asyncio.Task[None], seconds: float) -> None:
    """Let the load run for `seconds` (a planned stretch of the run, not a wait for a condition);
    a load that died ends the run at once."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(load), seconds)
    if load.done():
        load.result()
        raise RuntimeError("the load ended before the faults did")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        os.environ.pop(var, None)
    figures = uvloop.run(run_chaos(args))
    print(figures.render(), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nfigures written to {path}")
    raise SystemExit(0 if figures.passed else 1)


if __name__ == "__main__":
    main()
