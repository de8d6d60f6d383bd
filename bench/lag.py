"""What is left in the event log after a run: each durable consumer's lag, and the dead letters."""

from __future__ import annotations

import asyncio
import time

import nats

from wxbot_common.nats.subjects import DLQ_STREAM, EVENTS_STREAM
from wxbot_common.nats.topology import ALL_CONSUMERS

Lag = dict[str, dict[str, int]]  # durable -> {"pending", "ack_pending", "redelivered"}


async def read_lag(nats_url: str) -> tuple[Lag, int]:
    """Per durable: messages not yet delivered (`num_pending`), delivered and not acked
    (`num_ack_pending`), redelivered so far; and the messages in the dead-letter stream."""
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        lag: Lag = {}
        for spec in ALL_CONSUMERS:
            info = await js.consumer_info(EVENTS_STREAM, spec.durable)
            lag[spec.durable] = {
                "pending": int(info.num_pending or 0),
                "ack_pending": int(info.num_ack_pending or 0),
                "redelivered": int(info.num_redelivered or 0),
            }
        dead = int((await js.stream_info(DLQ_STREAM)).state.messages)
        return lag, dead
    finally:
        await nc.close()


def left(lag: Lag) -> int:
    return sum(v["pending"] + v["ack_pending"] for v in lag.values())


async def wait_for_no_lag(nats_url: str, timeout_s: float) -> tuple[Lag, int]:
    """Poll until every durable has handled everything (or the deadline); the last reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag, dead = await read_lag(nats_url)
        if not left(lag) or time.monotonic() > deadline:
            return lag, dead
        await asyncio.sleep(0.5)
