"""The projection: reads the whole event log in order and folds it into conversation state.

The replica holding the projection lease (`lease.py`) runs an ordered consumer from the position
stored in Redis and applies every event; the store's per-conversation sequence check makes a
second application a no-op, so a replica that projects while another still does (a lease
changing hands) writes nothing twice, and any replica can answer any GetHistory.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from wxbot_common.errors import PermanentError
from wxbot_common.ids import conversation_key
from wxbot_common.logs import get_logger
from wxbot_common.nats.propagation import extract_context
from wxbot_common.nats.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, EventKind, meta_of
from wxbot_context.store import ApplyOp, ContextStore, Op, StoredTurn
from wxbot_proto.events.v1 import events_pb2 as ev

# Replies that are not part of the dialogue (command confirmations, system notices).
_NOT_DIALOGUE = {ev.REPLY_SOURCE_COMMAND, ev.REPLY_SOURCE_NOTICE}


@dataclass(frozen=True)
class Change:
    op: Op
    turn: StoredTurn | None = None


def event_time(meta: ev.EventMeta) -> float:
    """When the event happened (unix seconds): replays age turns by it, not by the time of the replay."""
    return meta.occurred_at.seconds + meta.occurred_at.nanos / 1e9 if meta.occurred_at.seconds else time.time()


def images_sent(event: ev.ReplyApproved) -> str:
    """What the history says of an image-only answer ("画一只猫"): the prompts, so the model knows
    what it sent when asked to change it."""
    prompts = [m.caption for m in event.media if m.caption]
    return "".join(f"[image: {p}]" for p in prompts)


def change_for(kind: EventKind, event: Message, origin_seq: int) -> Change | None:
    """What an event means for its conversation (pure; None = nothing to record)."""
    now = event_time(meta_of(event))
    if kind is EventKind.RECEIVED:
        return Change(Op.PENDING)
    if kind is EventKind.ACCEPTED:
        assert isinstance(event, ev.InboundAccepted)
        image = event.message.kind == ev.MESSAGE_KIND_IMAGE
        return Change(Op.USER, StoredTurn("user", event.message.text, origin_seq, now, image=image))
    if kind is EventKind.APPROVED:
        assert isinstance(event, ev.ReplyApproved)
        if event.source in _NOT_DIALOGUE and not event.media:  # a drawing (/draw) is part of it
            return Change(Op.RESOLVE)
        return Change(Op.ASSISTANT, StoredTurn("assistant", event.text or images_sent(event), origin_seq, now))
    if kind in (EventKind.INBOUND_BLOCKED, EventKind.REPLY_BLOCKED):
        return Change(Op.RESOLVE)
    if kind is EventKind.RESET:
        return Change(Op.RESET)
    return None


class Watermark:
    """How far this replica has read the log; lets readers wait for a sequence cheaply."""

    def __init__(self) -> None:
        self.applied = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._n = 0
        self._touched: dict[str, asyncio.Event] = {}

    def advance(self, seq: int, ckey: str | None) -> None:
        self.applied = max(self.applied, seq)
        while self._waiters and self._waiters[0][0] <= self.applied:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
        if ckey is not None:
            event = self._touched.pop(ckey, None)
            if event is not None:
                event.set()

    async def wait_applied(self, seq: int, timeout_s: float) -> bool:
        if self.applied >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._waiters, (seq, self._n, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return False
        return True

    def has_waiters(self) -> bool:
        return bool(self._waiters or self._touched)

    def touch_all(self) -> None:
        """Wake every conversation waiter to read again (when what changed is not known)."""
        touched, self._touched = self._touched, {}
        for event in touched.values():
            event.set()

    def conversation_changed(self, ckey: str) -> asyncio.Event:
        """An event set the next time the projection touches `ckey` (register before reading)."""
        return self._touched.setdefault(ckey, asyncio.Event())


class ProjectionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "wxbot_context_events_applied", "Events folded into the projection", ["kind", "result"], registry=registry
        )
        self.position = Gauge("wxbot_context_position", "Stream sequence the projection has read", registry=registry)


# The kinds that change a conversation; the live projection asks the server for these alone.
PROJECTED_KINDS = (
    EventKind.RECEIVED,
    EventKind.ACCEPTED,
    EventKind.APPROVED,
    EventKind.INBOUND_BLOCKED,
    EventKind.REPLY_BLOCKED,
    EventKind.RESET,
)
BATCH_MAX = 256  # events folded in one Redis round trip
QUEUE_MAX = 4096  # events waiting for Redis before the subscription itself waits
# The client recreates the ordered consumer after two silent heartbeats: after a NATS restart
# (the ephemeral consumer is gone) the projection resumes within ~2-4 s, not the 10-20 s of the
# client's default (5 s), during which every GetHistory waiting for a new event times out.
HEARTBEAT_S = 1.0


@dataclass
class _Item:
    seq: int
    kind: EventKind
    change: Change
    ckey: str
    origin: int
    at: float
    span: trace.Span


class Projector:
    """Owns the ordered consumer and applies each event exactly once to the store.

    Events are folded in batches: whatever arrived while the previous batch was being written
    goes to Redis in one pipelined round trip, in log order (one Redis call per event cost more
    CPU than the rest of the projection together).
    """

    def __init__(
        self,
        js: JetStreamContext,
        store: ContextStore,
        watermark: Watermark,
        tracer: trace.Tracer,
        metrics: ProjectionMetrics,
        *,
        every_kind: bool = False,
        on_applied: Callable[[int, list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._js = js
        self._store = store
        self._watermark = watermark
        self._tracer = tracer
        self._metrics = metrics
        self._every_kind = every_kind  # a rebuild reads to the stream's last sequence, whatever its kind
        self._on_applied = on_applied  # tells the other replicas what each batch applied
        self._log = get_logger("wxbot.context.projection")
        self._sub: object | None = None
        self._queue: list[Msg] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = []
        start = await self._store.position()
        self._watermark.advance(start, None)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
            opt_start_seq=start + 1 if start else None,
            filter_subjects=None if self._every_kind else [k.wildcard for k in PROJECTED_KINDS],
        )
        self._worker = asyncio.create_task(self._fold(), name="projection")
        self._sub = await self._js.subscribe(
            EVENTS_SUBJECTS,
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_S,
            config=config,
            cb=self._on_msg,
        )
        self._log.info("projection_started", from_sequence=start + 1)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()  # type: ignore[attr-defined]
            self._sub = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _on_msg(self, msg: Msg) -> None:
        while len(self._queue) >= QUEUE_MAX:  # Redis is behind: hold the subscription back
            self._room.clear()
            await self._room.wait()
        self._queue.append(msg)
        self._arrived.set()

    async def _fold(self) -> None:
        while True:
            await self._arrived.wait()
            await asyncio.sleep(0)  # one more loop turn: the events read meanwhile join this batch
            self._arrived.clear()
            while self._queue:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                self._room.set()
                await self._fold_batch(batch)

    async def _fold_batch(self, batch: list[Msg]) -> None:
        items: list[_Item] = []
        last_seq = 0
        for msg in batch:
            seq = last_seq = msg.metadata.sequence.stream
            try:
                kind = EventKind.from_subject(msg.subject)
                event = kind.decode(msg.data)
            except PermanentError as exc:
                self._log.error("unreadable_event", seq=seq, error=str(exc))
                continue
            meta = meta_of(event)
            origin = meta.origin_sequence or seq  # a MessageReceived is its own origin
            change = change_for(kind, event, origin)
            if change is None:
                self._metrics.applied.labels(kind.name.lower(), "ignored").inc()
                continue
            span = self._tracer.start_span(
                f"process {kind.prefix}",
                context=extract_context(msg.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": kind.template,
                    "messaging.consumer.group.name": "context-projection",
                    "messaging.nats.stream_sequence": seq,
                    "messaging.batch.message_count": len(batch),
                    "wxbot.context.op": change.op.value,
                },
            )
            items.append(
                _Item(seq, kind, change, conversation_key(meta.conversation_id), origin, event_time(meta), span)
            )
        results = await self._apply_with_retry(items, last_seq) if items else []
        for item, applied in zip(items, results, strict=True):
            item.span.end()
            self._watermark.advance(item.seq, item.ckey)
            self._metrics.applied.labels(item.kind.name.lower(), "applied" if applied else "replayed").inc()
        if not items:  # nothing touched a conversation: record how far the log was read
            await self._store.advance_position(last_seq)
        self._watermark.advance(last_seq, None)
        self._metrics.position.set(last_seq)
        if self._on_applied is not None:
            await self._on_applied(last_seq, sorted({item.ckey for item in items}))

    async def _apply_with_retry(self, items: list[_Item], last_seq: int) -> list[bool]:
        """Redis outages pause the projection (in order) instead of skipping events."""
        ops = [ApplyOp(i.ckey, i.seq, i.change.op, i.origin, i.at, i.change.turn) for i in items]
        delay = 0.1
        while True:
            try:
                return await self._store.apply_many(ops)
            except (RedisError, OSError) as exc:
                self._log.warning("apply_failed_retrying", seq=last_seq, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
