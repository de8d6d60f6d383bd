"""`make bench-analytics`: how fast the analytics projection and its reports are on this machine.

1. Projection: a real nats-server and a real analytics service process; synthetic event chains
   published at a steady rate (default 2,000 events/s for 15 s), then a burst as fast as the
   publisher can go; the durable's lag is sampled throughout, and after each phase the time until
   it is back to zero is measured. The service's RSS is read from /proc.
2. Reports: one million events (200,000 chains: message, checks, answer, delivery; a share with
   feedback) built by the projection's own row code into an embedded store, then the A/B report
   and the full report timed (median of 5 runs).
Not a test: it prints its figures (and writes them as JSON with --json) for docs/analytics.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext

from bench.procstat import sample_pid
from wxbot_analytics.query import parse_query
from wxbot_analytics.reports import ReportRules, Reports
from wxbot_analytics.rows import RowRules, to_row
from wxbot_analytics.schema import COLUMNS, TABLE, ensure_schema
from wxbot_analytics.settings import Price
from wxbot_analytics.store import EmbeddedStore, Row
from wxbot_analytics.synthetic import Chain, chain_events
from wxbot_common.nats.subjects import EVENTS_STREAM, HEADER_MSG_ID
from wxbot_common.nats.topology import ANALYTICS_PROJECTION, StreamSettings, ensure_topology
from wxbot_devkit.launch import Child, NatsServer, free_port

EVENTS_PER_CHAIN = 5


def chains(start: int, count: int, at: float) -> list[Chain]:
    rnd = random.Random(start)
    return [
        Chain(
            n,
            f"bench-user-{n % 5000}",
            at,
            variant="A" if n % 2 else "B",
            tokens_in=rnd.randint(50, 400),
            tokens_out=rnd.randint(10, 200),
            answer_s=rnd.uniform(0.2, 2.0),
            feedback=(1 if rnd.random() < (0.6 if n % 2 else 0.5) else -1) if n % 10 in (0, 5) else 0,
        )
        for n in range(start, start + count)
    ]


async def lag(js: JetStreamContext) -> int:
    info = await js.consumer_info(EVENTS_STREAM, ANALYTICS_PROJECTION.durable)
    return int((info.num_pending or 0) + (info.num_ack_pending or 0))


async def publish(js: JetStreamContext, chain_list: list[Chain]) -> int:
    futures = []
    for c in chain_list:
        for kind, event in chain_events(c):
            meta = event.meta  # type: ignore[attr-defined]
            futures.append(
                js.publish(
                    kind.subject(meta.conversation_id),
                    event.SerializeToString(),
                    headers={HEADER_MSG_ID: meta.event_id},
                )
            )
    await asyncio.gather(*futures)
    return len(futures)


async def until_no_lag(js: JetStreamContext, timeout_s: float) -> float:
    """Seconds until the durable has stored everything (polled every 50 ms)."""
    started = time.monotonic()
    while await lag(js):
        if time.monotonic() - started > timeout_s:
            return float("inf")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def projection_bench(rate: int, seconds: float, burst: int, run_dir: Path) -> dict[str, Any]:
    server = NatsServer(run_dir / "nats")
    await server.start()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_topology(js, StreamSettings())
    port = free_port()
    env = {
        **os.environ,
        "NATS_URL": server.url,
        "ANALYTICS_PORT": str(port),
        "ANALYTICS_DATA_DIR": str(run_dir / "analytics"),
        "LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
    }
    service = Child("analytics", [sys.executable, "-m", "wxbot_analytics"], env=env, cwd=run_dir)
    await service.start()
    result: dict[str, Any] = {"rate_events_s": rate, "seconds": seconds}
    try:
        await service.wait_http_ok(f"http://127.0.0.1:{port}/readyz", 60)
        assert service.pid is not None
        per_tick = max(1, rate // EVENTS_PER_CHAIN // 20)  # chains every 50 ms
        n, sent, worst = 0, 0, 0
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            sent += await publish(js, chains(n, per_tick, time.time()))
            n += per_tick
            tick += 1
            if tick % 5 == 0:
                worst = max(worst, await lag(js))
            await asyncio.sleep(max(0.0, started + tick * 0.05 - time.monotonic()))
        elapsed = time.monotonic() - started
        result |= {
            "steady_published": sent,
            "steady_achieved_events_s": round(sent / elapsed),
            "steady_worst_lag_events": worst,
            "steady_lag_to_zero_s": round(await until_no_lag(js, 60), 2),
        }
        t0 = time.monotonic()
        burst_sent = 0
        while burst_sent < burst:
            burst_sent += await publish(js, chains(n, 200, time.time()))
            n += 200
        publish_s = time.monotonic() - t0
        result |= {
            "burst_events": burst_sent,
            "burst_publish_s": round(publish_s, 2),
            "burst_lag_after_publish": await lag(js),
            "burst_lag_to_zero_s": round(await until_no_lag(js, 120), 2),
            "burst_events_s_overall": round(burst_sent / (time.monotonic() - t0)),
        }
        sample = sample_pid(service.pid)
        if sample is not None:
            result |= {
                "service_rss_mb": round((sample.rss_kb or 0) / 1024),
                "service_peak_rss_mb": round((sample.hwm_kb or 0) / 1024),
            }
    finally:
        await nc.drain()
        await service.stop()
        await server.stop()
    return result


def report_bench(events: int, store_dir: Path, runs: int = 5) -> dict[str, Any]:
    """Time the reports over `events` events (loaded into `store_dir` unless it holds them already)."""
    store = EmbeddedStore(store_dir, "wxbot")
    ensure_schema(store, 400)
    (have,) = store.rows(f"SELECT count() AS n FROM wxbot.{TABLE}")
    if int(have["n"]) >= events:
        events = 0  # reuse what an earlier run loaded
    rules = RowRules.of("bench", False, ["不对"])
    now = time.time()
    built = 0
    t0 = time.monotonic()
    columns = list(COLUMNS)
    n = 0
    while built < events:
        batch: list[Row] = []
        for template in chains(n, 10_000, 0.0):
            at = now - 6 * 86400 * (template.n % 1000) / 1000  # spread over six days
            for kind, event in chain_events(Chain(**{**template.__dict__, "at": at})):
                built += 1
                batch.append(to_row(kind, event, built, rules))
        n += 10_000
        store.insert(TABLE, columns, batch)
    load_s = time.monotonic() - t0
    if built:
        store.command(f"OPTIMIZE TABLE wxbot.{TABLE} FINAL")
    (have,) = store.rows(f"SELECT count() AS n FROM wxbot.{TABLE}")
    reports = Reports(store, ReportRules({"fake-model": Price(1.0, 4.0)}, "USD", 300, 30, False))
    q = parse_query({"since": "7d"}, 400)
    ab, full = [], []
    for _ in range(runs):
        t = time.perf_counter()
        variants, comparisons = reports.variants(q)
        ab.append(time.perf_counter() - t)
        t = time.perf_counter()
        reports.full(q)
        full.append(time.perf_counter() - t)
    sample = sample_pid(os.getpid())
    store.close()
    return {
        "events": int(have["n"]),
        "load_s": round(load_s, 1),
        "ab_report_median_s": round(statistics.median(ab), 3),
        "ab_report_max_s": round(max(ab), 3),
        "full_report_median_s": round(statistics.median(full), 3),
        "verdict": comparisons[0]["verdict"] if comparisons else "",
        "answers": {v["name"]: v["answers"] for v in variants},
        "bench_process_rss_mb": round((sample.rss_kb or 0) / 1024) if sample else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__)
    parser.add_argument("--rate", type=int, default=2000, help="steady events per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=20_000, help="events published as fast as possible")
    parser.add_argument("--events", type=int, default=1_000_000, help="events behind the timed reports")
    parser.add_argument("--skip-projection", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument("--json", default="", help="also write the figures here")
    parser.add_argument("--store-dir", default="", help="keep the million-event store here (reused when it is full)")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="wxbot-bench-analytics-") as tmp:
        if not args.skip_projection:
            figures["projection"] = asyncio.run(projection_bench(args.rate, args.seconds, args.burst, Path(tmp)))
            print(json.dumps({"projection": figures["projection"]}, indent=2), flush=True)
        if not args.skip_reports:
            store_dir = Path(args.store_dir) if args.store_dir else Path(tmp) / "report-store"
            figures["reports"] = report_bench(args.events, store_dir)
            print(json.dumps({"reports": figures["reports"]}, indent=2, ensure_ascii=False), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
