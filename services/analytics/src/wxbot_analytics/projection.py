"""The live projection: every event of the log, in batches, into the store; acked only once stored.

The shared consumer loop (`wxbot_common.nats.consumer`) hands each event to `Projection.handle`,
which queues its row and waits for the batch that carries it: a batch is inserted when it is full
(`ANALYTICS_BATCH_MAX`) or has waited `ANALYTICS_BATCH_LINGER_S`, and every handler of the batch
returns (→ ack) only after the insert succeeded; if it failed, each raises (→ nak, redelivered).
A crash between insert and ack redelivers rows the store already has: they share their key and
collapse (schema.py), so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wxbot_analytics.rows import RowRules, to_row
from wxbot_analytics.schema import COLUMNS, TABLE
from wxbot_analytics.store import Row, Store, StoreError
from wxbot_common.errors import TransientError
from wxbot_common.logs import get_logger
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.subjects import EVENTS_STREAM
from wxbot_common.nats.topology import ANALYTICS_PROJECTION

Insert = Callable[[Sequence[Row]], Awaitable[None]]


class ProjectionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "wxbot_analytics_rows_inserted", "Event rows written to the read model", ["kind"], registry=registry
        )
        self.batches = Histogram(
            "wxbot_analytics_batch_rows",
            "Rows per insert",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.insert_seconds = Histogram(
            "wxbot_analytics_insert_seconds",
            "Time one batch insert takes",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.failures = Counter(
            "wxbot_analytics_insert_failures", "Batch inserts the store refused (retried)", registry=registry
        )
        self.lag = Gauge(
            "wxbot_analytics_lag_events",
            "Events in the log not yet in the read model (undelivered + delivered and not yet stored)",
            registry=registry,
        )
        self.lag_events = 0  # the lag gauge's last value, for /v1/status
        self.inserted_total = 0  # rows this process stored, likewise
        self.position = Gauge(
            "wxbot_analytics_position", "Highest stream sequence stored in the read model", registry=registry
        )


def store_inserter(store: Store) -> Insert:
    """Insert rows off the event loop (both store clients block)."""
    columns = list(COLUMNS)

    async def insert(rows: Sequence[Row]) -> None:
        await asyncio.to_thread(store.insert, TABLE, columns, rows)

    return insert


class Batcher:
    """Collects rows from many handlers and inserts them together; `add` returns once stored."""

    def __init__(self, insert: Insert, metrics: ProjectionMetrics, batch_max: int, linger_s: float) -> None:
        self._insert = insert
        self._metrics = metrics
        self._batch_max = batch_max
        self._linger_s = linger_s
        self._rows: list[Row] = []
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._position = 0
        self._lock = asyncio.Lock()  # one insert at a time: keeps the store's parts few and large
        self._log = get_logger("wxbot.analytics.projection")

    async def add(self, row: Row) -> None:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._flush_soon)
        done = self._done
        self._rows.append(row)
        if len(self._rows) >= self._batch_max:
            self._flush_soon()
        await asyncio.shield(done)

    def _flush_soon(self) -> None:
        if self._done is None:
            return
        rows, done, self._rows, self._done = self._rows, self._done, [], None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.get_running_loop().create_task(self._flush(rows, done))
        task.add_done_callback(lambda _: None)

    async def _flush(self, rows: list[Row], done: asyncio.Future[None]) -> None:
        async with self._lock:
            started = time.perf_counter()
            try:
                await self._insert(rows)
            except (StoreError, OSError) as exc:
                self._metrics.failures.inc()
                self._log.warning("insert_failed", rows=len(rows), error=str(exc)[:500])
                done.set_exception(TransientError(f"analytics store: {exc}", delay_s=1.0))
                done.exception()  # retrieved here too: no "never retrieved" warning when no handler waits
                return
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()
                raise
            self._metrics.insert_seconds.observe(time.perf_counter() - started)
            self._metrics.batches.observe(len(rows))
            for row in rows:
                self._metrics.rows.labels(row["kind"]).inc()
            self._metrics.inserted_total += len(rows)
            self._position = max(self._position, *(r["seq"] for r in rows))
            self._metrics.position.set(self._position)
            done.set_result(None)


class Projection:
    """The handler of the `analytics-projection` durable."""

    def __init__(self, batcher: Batcher, rules: RowRules) -> None:
        self._batcher = batcher
        self._rules = rules

    async def handle(self, delivery: Delivery) -> None:
        row = to_row(delivery.kind, delivery.event, delivery.stream_sequence, self._rules)
        await self._batcher.add(row)


async def watch_lag(js: JetStreamContext, metrics: ProjectionMetrics, stop: asyncio.Event, every_s: float) -> None:
    """Export the durable's lag every `every_s` (the shared loop does it only every 10 s)."""
    log = get_logger("wxbot.analytics.projection")
    while not stop.is_set():
        try:
            info = await js.consumer_info(EVENTS_STREAM, ANALYTICS_PROJECTION.durable)
            metrics.lag_events = (info.num_pending or 0) + (info.num_ack_pending or 0)
            metrics.lag.set(metrics.lag_events)
        except Exception as exc:
            log.debug("consumer_info_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
