"""`python -m wxbot_context rebuild`: rebuild every conversation from the event log.

The log is the truth; Redis holds a projection of it. After losing or corrupting Redis (or to
change the retention settings retroactively), stop the context replicas, run this, start them
again. It wipes the projection's keys, replays the stream from its first message to the last one
present when it started, with the same code as the live projection (so the result is identical),
and prints what it did. Replicas started afterwards continue from the rebuilt position.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from opentelemetry import trace
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from wxbot_common.logs import configure_logging
from wxbot_common.nats.connection import connect_nats
from wxbot_common.nats.subjects import EVENTS_STREAM
from wxbot_common.redis_client import create_redis
from wxbot_context.projection import ProjectionMetrics, Projector, Watermark
from wxbot_context.settings import ContextSettings
from wxbot_context.store import ContextStore

PROJECTION_KEYS = "wxbot:ctx:*"


async def wipe(redis: Redis) -> int:
    """Delete every key of the projection; how many there were."""
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=PROJECTION_KEYS, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await redis.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


async def rebuild(settings: ContextSettings, timeout_s: float) -> int:
    configure_logging("context-rebuild", settings.log_level, settings.log_format)
    nc = await connect_nats(settings, "wxbot-context-rebuild")
    redis = create_redis(settings.redis_url)
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
        deleted = await wipe(redis)
        print(f"wiped {deleted} projection keys; replaying {EVENTS_STREAM} up to sequence {last}", flush=True)
        store = ContextStore(
            redis, settings.context_ttl_s, settings.context_max_turns, settings.context_pending_stale_s
        )
        watermark = Watermark()
        metrics = ProjectionMetrics(CollectorRegistry())
        projector = Projector(js, store, watermark, trace.get_tracer("wxbot.context.rebuild"), metrics, every_kind=True)
        started = time.monotonic()
        await projector.start()
        try:
            if not await watermark.wait_applied(last, timeout_s):
                print(f"replay stopped at {watermark.applied} of {last}: timed out", file=sys.stderr)
                return 1
        finally:
            await projector.stop()
        await store.advance_position(last)
        conversations = sum([1 async for _ in redis.scan_iter(match="wxbot:ctx:{*}:seq", count=1000)])
        elapsed = time.monotonic() - started
        print(f"replayed {last} events in {elapsed:.1f} s; {conversations} live conversations", flush=True)
        return 0
    finally:
        await redis.aclose()
        await nc.drain()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m wxbot_context rebuild", description=__doc__)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the replay may take")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(rebuild(ContextSettings(), args.timeout)))
