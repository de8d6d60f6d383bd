"""`python -m wxbot_analytics rebuild`: empty the read model and replay the whole event log into it.

With the embedded store, stop the analytics service first (its directory is locked while it
runs); with a ClickHouse server it may keep running: the rows it inserts meanwhile and the
replayed ones share their keys and collapse. Either way the durable consumer keeps its position,
and whatever the replay and the live projection both store counts once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from wxbot_analytics.projection import store_inserter
from wxbot_analytics.replay import Replay
from wxbot_analytics.rows import RowRules
from wxbot_analytics.schema import ensure_schema, wipe
from wxbot_analytics.settings import AnalyticsSettings
from wxbot_analytics.store import StoreError
from wxbot_analytics.wiring import open_configured_store, row_rules
from wxbot_common.logs import configure_logging
from wxbot_common.nats.connection import connect_nats
from wxbot_common.nats.subjects import EVENTS_STREAM


async def rebuild(settings: AnalyticsSettings, timeout_s: float) -> int:
    configure_logging("analytics-rebuild", settings.log_level, settings.log_format)
    try:
        store = open_configured_store(settings)
    except (StoreError, ValueError) as exc:
        print(f"rebuild: {exc}", file=sys.stderr)
        return 2
    nc = await connect_nats(settings, "wxbot-analytics-rebuild")
    try:
        rules: RowRules = row_rules(settings)
        last = int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq)
        await asyncio.to_thread(wipe, store)
        await asyncio.to_thread(ensure_schema, store, settings.analytics_retention_days)
        print(f"emptied the read model; replaying {EVENTS_STREAM} up to sequence {last}", flush=True)
        started = time.monotonic()
        replay = Replay(nc.jetstream(), rules, store_inserter(store), settings.analytics_batch_max)
        try:
            rows = await replay.run(last, timeout_s)
        except TimeoutError as exc:
            print(f"rebuild: {exc}", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        print(f"stored {rows} events in {elapsed:.1f} s ({replay.skipped} unreadable skipped)", flush=True)
        return 0
    finally:
        await nc.drain()
        store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m wxbot_analytics rebuild", description=__doc__)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the replay may take")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(rebuild(AnalyticsSettings(), args.timeout)))
