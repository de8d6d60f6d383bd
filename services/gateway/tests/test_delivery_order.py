"""Reply delivery keeps each conversation's order and sends each part once through an outage of the
WeCom API, across two delivery "replicas" (two consumer loops on the one durable). Real NATS
JetStream, real Redis, the fake WeCom API refusing connections."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.ids import derived_event_id
from wxbot_common.nats.consumer import ConsumerLoop, ConsumerMetrics
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EventKind
from wxbot_common.nats.topology import GATEWAY_DELIVERY, ensure_topology
from wxbot_common.outbox import Outbox, Turn
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.launch import NatsServer, RedisServer
from wxbot_gateway.claims import PartClaims
from wxbot_gateway.delivery import ReplyDelivery
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.senders import WeComAppSender
from wxbot_gateway.wecom_api import WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)
CORP, SECRET, AGENT = "wwdeliveryorder0001", "order-secret", "1000002"
_ORIGINS = itertools.count(1_000)


@dataclass
class Servers:
    nats_url: str
    redis_url: str
    wecom: FakeWeCom


@pytest.fixture(scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    nats_server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    redis_server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    wecom = FakeWeCom(CORP, SECRET)
    await asyncio.gather(nats_server.start(), redis_server.start(), wecom.start())
    nc = await nats.connect(nats_server.url)
    await ensure_topology(nc.jetstream())
    await nc.close()
    yield Servers(nats_server.url, redis_server.url, wecom)
    await wecom.stop()
    await asyncio.gather(nats_server.stop(), redis_server.stop())


class Replica:
    """What a gateway process runs for delivery: its own NATS and Redis clients, outbox and consumer loop."""

    def __init__(self, servers: Servers, registry: CollectorRegistry) -> None:
        self.servers = servers
        self.registry = registry
        self.metrics = GatewayMetrics(registry)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.nc: Client = await nats.connect(self.servers.nats_url)
        self.redis = Redis.from_url(self.servers.redis_url)
        self.http = TracedHttp(create_session(8, 2.0))
        self.outbox = Outbox(self.redis, self.nc, poll_s=1.0)
        await self.outbox.start()
        wecom = WeComClient(self.http, self.redis, self.servers.wecom.base_url, CORP, SECRET, AGENT)
        publisher = EventPublisher(self.nc.jetstream(), trace.get_tracer("test"))
        delivery = ReplyDelivery(
            {ev.CHANNEL_WECOM_APP: WeComAppSender(wecom)},
            PartClaims(self.redis, sending_ttl_s=5.0),
            self.outbox,
            publisher,
            self.metrics,
            GATEWAY_DELIVERY.max_deliver,
            retry_base_s=0.2,
            retry_max_s=0.5,
            hold_s=30.0,
        )
        self.loop = ConsumerLoop(
            self.nc,
            GATEWAY_DELIVERY,
            delivery.handle,
            publisher,
            trace.get_tracer("test"),
            ConsumerMetrics(self.registry),
        )
        self.task = asyncio.create_task(self.loop.run())

    async def stop(self) -> None:
        await self.loop.stop(2.0)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.outbox.stop()
        await self.http.close()
        await self.redis.aclose()
        await self.nc.close()

    def deliveries(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "wxbot_gateway_deliveries_total", {"channel": "wecom", "outcome": outcome, "errcode": "0"}
        )
        return value or 0.0


@pytest.fixture
async def replicas(servers: Servers) -> AsyncIterator[list[Replica]]:
    started = [Replica(servers, CollectorRegistry()) for _ in range(2)]
    for replica in started:
        await replica.start()
    yield started
    for replica in started:
        await replica.stop()


async def approve(nc: Client, user: str, text: str) -> None:
    """Publish the ReplyApproved safety would for the next message of `user`'s conversation."""
    origin = next(_ORIGINS)
    approved = ev.ReplyApproved(text=text)
    approved.reply_to.corp_id, approved.reply_to.agent_id, approved.reply_to.user_id = CORP, AGENT, user
    approved.meta.event_id = derived_event_id("test", f"{user}/{origin}", "approved")
    approved.meta.conversation_id = wecom_conversation_id(CORP, AGENT, user)
    approved.meta.channel = ev.CHANNEL_WECOM_APP
    approved.meta.origin_sequence = origin
    assert EventKind.of(approved) is EventKind.APPROVED
    await EventPublisher(nc.jetstream(), trace.get_tracer("test")).publish(approved)


async def test_replies_held_up_by_an_outage_go_out_once_each_in_order(
    servers: Servers, replicas: list[Replica]
) -> None:
    wecom = servers.wecom
    nc = replicas[0].nc
    await wecom.refuse_connections()
    try:
        for i in range(4):  # approved in order, a little apart, as a conversation's replies are
            for user in ("ann", "bob"):
                await approve(nc, user, f"{user} reply {i}")
            await asyncio.sleep(0.05)  # spacing of the approvals, not a wait for a condition
        await wait_until(
            lambda: sum(r.deliveries("retry") for r in replicas) >= 4, 20, "the deliveries to retry while WeCom is down"
        )
    finally:
        await wecom.accept_connections()
    for user in ("ann", "bob"):
        got = await wecom.wait_for_messages(user, 4, timeout=30)
        assert [m.content for m in got] == [f"{user} reply {i}" for i in range(4)]
    await asyncio.sleep(0.5)  # room for a duplicate to show (none may)
    assert len(wecom.messages_for("ann")) == len(wecom.messages_for("bob")) == 4


async def test_a_part_left_claimed_by_a_dead_delivery_is_sent_once_its_claim_expires(servers: Servers) -> None:
    redis = Redis.from_url(servers.redis_url)
    try:
        claims = PartClaims(redis, sending_ttl_s=0.5)
        key = claims.key("event-of-a-dead-replica", 0)
        assert await claims.claim(key) is not None  # taken, then the replica "died" before sending
        started = time.monotonic()
        token = await claims.claim(key)  # waits for the claim to expire instead of sending alongside
        assert token is not None and time.monotonic() - started >= 0.3
        await claims.record(key, "msgid-1")
        assert await claims.claim(key) is None and await claims.sent_id(key) == "msgid-1"
        other = claims.key("event-whose-send-failed", 0)
        failed = await claims.claim(other)
        assert failed is not None
        await claims.release(other, failed)
        assert await claims.claim(other) is not None  # at once: a failed send gives the part back
    finally:
        await redis.aclose()


async def test_the_outbox_lets_a_reply_go_when_the_earlier_ones_left_and_never_queues_a_done_one_again(
    servers: Servers,
) -> None:
    redis = Redis.from_url(servers.redis_url)
    try:
        outbox = Outbox(redis, poll_s=0.05)
        conversation = wecom_conversation_id(CORP, AGENT, "outbox-user")
        assert await outbox.enter(conversation, 12, "reply-to-12") is Turn.FIRST  # nothing earlier queued yet
        assert await outbox.enter(conversation, 10, "reply-to-10") is Turn.FIRST
        assert await outbox.enter(conversation, 12, "reply-to-12") is Turn.WAIT  # queued again: same place
        assert not await outbox.wait_turn(conversation, "reply-to-12", 0.2)
        waiting = asyncio.create_task(outbox.wait_turn(conversation, "reply-to-12", 5.0))
        await outbox.leave(conversation, 10, "reply-to-10")
        assert await waiting
        # Run again after it was sent (safety redelivered after a NATS restart): not queued again.
        assert await outbox.enter(conversation, 10, "reply-to-10") is Turn.DONE
        assert await outbox.wait_turn(conversation, "reply-to-12", 0.0)
        await outbox.leave(conversation, 12, "reply-to-12")
        assert await outbox.enter(conversation, 12, "reply-to-12") is Turn.DONE
        assert await outbox.enter(conversation, 13, "reply-to-13") is Turn.FIRST
    finally:
        await redis.aclose()


async def test_a_reply_nobody_will_take_out_holds_its_conversation_up_only_until_it_is_stale(
    servers: Servers,
) -> None:
    redis = Redis.from_url(servers.redis_url)
    try:
        outbox = Outbox(redis, poll_s=0.05, stale_s=0.5)
        conversation = wecom_conversation_id(CORP, AGENT, "orphan-user")
        assert await outbox.enter(conversation, 20, "reply-never-delivered") is Turn.FIRST  # then lost
        assert await outbox.enter(conversation, 21, "next-reply") is Turn.WAIT
        started = time.monotonic()
        assert await outbox.wait_turn(conversation, "next-reply", 5.0)  # the orphan was dropped
        assert 0.4 <= time.monotonic() - started < 3.0
    finally:
        await redis.aclose()
