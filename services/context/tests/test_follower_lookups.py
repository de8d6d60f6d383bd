"""A replica that has not heard of a write yet (a follower, before the leader's announcement)
answers a batched lookup from Redis when Redis already has its event, and only sends back what
Redis does not have yet. Real redis-server; the servicer is called as grpc.aio would call it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from wxbot_common.ids import conversation_key
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.red_metrics import GrpcRedMetrics
from wxbot_common.rpc import BatchItems
from wxbot_context.grpc_service import ContextServicer
from wxbot_context.projection import Watermark
from wxbot_context.settings import ContextSettings
from wxbot_context.store import ApplyOp, ContextStore, Op, StoredTurn
from wxbot_devkit.launch import redis_client
from wxbot_proto.context.v1 import context_pb2 as pb

pytestmark = pytest.mark.timeout(30)

CONVERSATION = "wecom:ww-test:1000002:follower-user"


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    async with redis_client(tmp_path) as client:
        yield client


def follower(store: ContextStore) -> tuple[ContextServicer, Watermark]:
    """A servicer whose own watermark never advanced: no announcement has reached it."""
    watermark = Watermark()
    red = GrpcRedMetrics(CollectorRegistry())
    items = BatchItems("/wxbot.context.v1.ContextService/GetHistory", red, trace.get_tracer("test"))
    # GetHistories publishes nothing: no NATS publisher is needed.
    servicer = ContextServicer(store, watermark, cast(EventPublisher, None), ContextSettings(), items)
    return servicer, watermark


async def test_a_lookup_redis_already_has_is_answered_in_the_batch(redis: Redis) -> None:
    store = ContextStore(redis, ttl_s=3600, max_turns=50, pending_stale_s=300.0)
    ckey, now = conversation_key(CONVERSATION), time.time()
    # The leader's projection: message 5 asked and answered, message 8 asked.
    await store.apply_many(
        [
            ApplyOp(ckey, 5, Op.USER, 5, now, StoredTurn("user", "what is the weather?", 5, now)),
            ApplyOp(ckey, 7, Op.ASSISTANT, 5, now, StoredTurn("assistant", "sunny", 5, now)),
            ApplyOp(ckey, 8, Op.USER, 8, now, StoredTurn("user", "and tomorrow?", 8, now)),
        ]
    )
    servicer, watermark = follower(store)
    assert watermark.applied == 0

    def lookup(min_sequence: int) -> pb.HistoryLookup:
        return pb.HistoryLookup(request=pb.GetHistoryRequest(conversation_id=CONVERSATION, min_sequence=min_sequence))

    asked = pb.GetHistoriesRequest(lookups=[lookup(8), lookup(9)])  # nlp answers message 8; 9 is not in Redis
    answered = await servicer.GetHistories(asked, cast(Any, None))

    outcomes = [r.WhichOneof("outcome") for r in answered.results]
    assert outcomes == ["history", "retry_alone"]
    history = answered.results[0].history
    assert history.complete and history.applied_sequence == 8
    assert [(t.role, t.text) for t in history.turns] == [
        (pb.ROLE_USER, "what is the weather?"),
        (pb.ROLE_ASSISTANT, "sunny"),
    ]
    assert watermark.applied == 8  # what it read lets its waiting GetHistory calls go too
