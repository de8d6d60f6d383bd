"""The gRPC `ContextService`: history with read-your-writes and conversation order."""

from __future__ import annotations

import asyncio
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from wxbot_common.ids import conversation_key, derived_event_id, now_timestamp
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.rpc import BatchItems
from wxbot_context.history import fit_budget
from wxbot_context.projection import Watermark
from wxbot_context.settings import ContextSettings
from wxbot_context.store import ContextStore, Snapshot
from wxbot_proto.context.v1 import context_pb2 as pb
from wxbot_proto.context.v1 import context_pb2_grpc as pb_grpc
from wxbot_proto.events.v1 import events_pb2 as ev

_ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}


class ContextServicer(pb_grpc.ContextServiceServicer):
    def __init__(
        self,
        store: ContextStore,
        watermark: Watermark,
        publisher: EventPublisher,
        settings: ContextSettings,
        batch_items: BatchItems,
    ) -> None:
        self._store = store
        self._watermark = watermark
        self._publisher = publisher
        self._settings = settings
        self._batch_items = batch_items  # the GetHistory span and count of each lookup of a GetHistories

    async def GetHistory(  # noqa: N802 (gRPC method name)
        self,
        request: pb.GetHistoryRequest,
        context: grpc.aio.ServicerContext[pb.GetHistoryRequest, pb.GetHistoryResponse],
    ) -> pb.GetHistoryResponse:
        if not request.conversation_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required")
        min_seq = request.min_sequence
        if min_seq and not await self._watermark.wait_applied(min_seq, self._settings.context_read_wait_s):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"projection at {self._watermark.applied}, behind requested {min_seq}",
            )
        snapshot, complete = await self._ordered_snapshot(conversation_key(request.conversation_id), min_seq)
        return self._response(request, snapshot, complete)

    async def GetHistories(  # noqa: N802 (gRPC method name)
        self,
        request: pb.GetHistoriesRequest,
        context: grpc.aio.ServicerContext[pb.GetHistoriesRequest, pb.GetHistoriesResponse],
    ) -> pb.GetHistoriesResponse:
        """Answer, from one Redis round trip, every lookup that needs no waiting; the rest `retry_alone`.

        A lookup for a sequence this replica has not seen applied yet (a follower learns it from the
        leader's announcement, a moment after the write) is read anyway, with the applied position
        in the same round trip: it is answered when Redis already has its event, instead of being
        sent back to be asked again alone (a gRPC call, a Redis read and a wait of its own).
        """
        started_ns, started_perf = time.time_ns(), time.perf_counter()
        applied = self._watermark.applied
        lookups = list(request.lookups)
        asked = [i for i, lookup in enumerate(lookups) if lookup.request.conversation_id]
        asks = [(conversation_key(lookups[i].request.conversation_id), lookups[i].request.min_sequence) for i in asked]
        if any(lookups[i].request.min_sequence > applied for i in asked):
            position, snapshots = await self._store.position_and_snapshots(asks)
            self._watermark.advance(position, None)
            applied = max(applied, position)
        else:
            snapshots = await self._store.snapshots(asks)
        results = [pb.HistoryResult(retry_alone=True) for _ in lookups]
        for i, snapshot in zip(asked, snapshots, strict=True):
            lookup = lookups[i]
            if lookup.request.min_sequence > applied:
                continue  # its event is not in Redis yet: GetHistory waits for the projection
            if lookup.request.min_sequence and snapshot.pending_before:
                continue  # an earlier message of the conversation is unanswered: GetHistory waits for it
            results[i] = pb.HistoryResult(history=self._response(lookup.request, snapshot, True))
            self._batch_items.answered(dict(lookup.trace_context), started_ns, started_perf)
        return pb.GetHistoriesResponse(results=results)

    def _response(self, request: pb.GetHistoryRequest, snapshot: Snapshot, complete: bool) -> pb.GetHistoryResponse:
        budget = request.token_budget or self._settings.context_token_budget
        turns, tokens = fit_budget(snapshot.turns, budget)
        return pb.GetHistoryResponse(
            turns=[
                pb.Turn(
                    role=_ROLES[t.role], text=t.text, origin_sequence=t.origin_sequence, at=_ts(t.at), image=t.image
                )
                for t in turns
            ],
            applied_sequence=self._watermark.applied,
            complete=complete,
            estimated_tokens=tokens,
            truncated=len(turns) < len(snapshot.turns),
        )

    async def _ordered_snapshot(self, ckey: str, min_seq: int) -> tuple[Snapshot, bool]:
        """Wait until no earlier message of the conversation is unanswered (bounded)."""
        deadline = time.monotonic() + self._settings.context_order_wait_s
        while True:
            changed = self._watermark.conversation_changed(ckey)  # register before reading
            snapshot = await self._store.snapshot(ckey, min_seq)
            if not min_seq or not snapshot.pending_before:
                return snapshot, True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return snapshot, False
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return await self._store.snapshot(ckey, min_seq), False

    async def ResetConversation(  # noqa: N802 (gRPC method name)
        self,
        request: pb.ResetConversationRequest,
        context: grpc.aio.ServicerContext[pb.ResetConversationRequest, pb.ResetConversationResponse],
    ) -> pb.ResetConversationResponse:
        if not request.conversation_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required")
        cause = request.causation_id or f"grpc:{time.time_ns()}"
        event = ev.ConversationReset()
        event.meta.event_id = derived_event_id("context", cause, "reset")
        event.meta.conversation_id = request.conversation_id
        event.meta.causation_id = request.causation_id
        event.meta.occurred_at.CopyFrom(now_timestamp())
        ack = await self._publisher.publish(event)
        return pb.ResetConversationResponse(sequence=ack.seq)


def _ts(unix: float) -> Timestamp:
    """As `Timestamp.FromNanoseconds(int(unix * 1e9))`, without its Python-level arithmetic per turn."""
    nanos = int(unix * 1e9)
    return Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)
