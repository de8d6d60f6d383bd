"""Read the event log from its first message to a given sequence and store every event (a rebuild).

An ordered consumer (ephemeral, no acks) streams the log; rows are built exactly as the live
projection builds them (rows.py) and inserted in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from wxbot_analytics.projection import Insert
from wxbot_analytics.rows import RowRules, to_row
from wxbot_analytics.store import Row
from wxbot_common.errors import PermanentError
from wxbot_common.logs import get_logger
from wxbot_common.nats.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, EventKind

QUEUE_MAX = 50_000  # rows waiting for the store before the subscription waits


class Replay:
    def __init__(self, js: JetStreamContext, rules: RowRules, insert: Insert, batch_max: int) -> None:
        self._js = js
        self._rules = rules
        self._insert = insert
        self._batch_max = batch_max
        self._rows: list[Row] = []
        self._seen = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._log = get_logger("wxbot.analytics.replay")
        self.skipped = 0

    async def _on_msg(self, msg: Msg) -> None:
        while len(self._rows) >= QUEUE_MAX:
            self._room.clear()
            await self._room.wait()
        seq = msg.metadata.sequence.stream
        self._seen = max(self._seen, seq)
        try:
            kind = EventKind.from_subject(msg.subject)
            self._rows.append(to_row(kind, kind.decode(msg.data), seq, self._rules))
        except PermanentError as exc:
            self.skipped += 1
            self._log.error("unreadable_event", seq=seq, error=str(exc))
        self._arrived.set()

    async def run(self, last: int, timeout_s: float, progress: Callable[[int, int], None] | None = None) -> int:
        """Store every event up to sequence `last`; how many rows were inserted."""
        if last <= 0:
            return 0
        inserted = 0
        sub = await self._js.subscribe(
            EVENTS_SUBJECTS,
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            cb=self._on_msg,
        )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self._rows:
                    batch, self._rows = self._rows[: self._batch_max], self._rows[self._batch_max :]
                    self._room.set()
                    await self._insert(batch)
                    inserted += len(batch)
                    if progress is not None:
                        progress(self._seen, last)
                    continue
                if self._seen >= last:
                    return inserted
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replay reached sequence {self._seen} of {last} in {timeout_s:.0f} s")
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 1.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
