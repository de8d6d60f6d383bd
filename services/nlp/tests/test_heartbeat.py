"""The nlp-drafter durable keeps a message alive while an LLM call outlasts `ack_wait`: JetStream
does not hand it to a second drafter (a second LLM call, a second bill) mid-answer. Real NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from wxbot_common.nats.consumer import ConsumerLoop, ConsumerMetrics, Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EVENTS_STREAM
from wxbot_common.nats.topology import NLP_DRAFTER, StreamSettings, ensure_topology
from wxbot_devkit.launch import NatsServer
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)
ACK_WAIT_S = 2.0
LLM_CALL_S = 3 * ACK_WAIT_S  # a slow model: three times as long as JetStream waits for an ack


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    client = await nats.connect(server.url)
    yield client
    await client.close()
    await server.stop()


async def deliveries_of_one_slow_answer(nc: Client, durable: str, heartbeat: bool) -> list[int]:
    """Run the drafter's consumer (with a short ack_wait) on one message whose handling takes
    LLM_CALL_S; return `num_delivered` of every time the handler was started."""
    spec = dataclasses.replace(NLP_DRAFTER, durable=durable, ack_wait_s=ACK_WAIT_S, heartbeat=heartbeat)
    js = nc.jetstream()
    await ensure_topology(js, StreamSettings(consumers=(spec,)))
    publisher = EventPublisher(js, trace.get_tracer("test"))
    started: list[int] = []
    first_done = asyncio.Event()

    async def slow_llm_call(delivery: Delivery) -> None:
        started.append(delivery.num_delivered)
        await asyncio.sleep(LLM_CALL_S)
        first_done.set()

    loop = ConsumerLoop(
        nc, spec, slow_llm_call, publisher, trace.get_tracer("test"), ConsumerMetrics(CollectorRegistry())
    )
    running = asyncio.create_task(loop.run())
    try:
        accepted = ev.InboundAccepted()
        accepted.meta.event_id = f"evt-{durable}"
        accepted.meta.conversation_id = f"conv-{durable}"
        accepted.message.text = "a question for a slow model"
        await publisher.publish(accepted)
        await asyncio.wait_for(first_done.wait(), LLM_CALL_S + 10)
        if not heartbeat:  # the redelivery has started long before the first call ended
            return started
        info = await _until_settled(js, spec.durable, deadline_s=10)
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
        return started
    finally:
        await loop.stop(grace_s=0.1)
        running.cancel()


async def _until_settled(js: JetStreamContext, durable: str, deadline_s: float) -> ConsumerInfo:
    end = time.monotonic() + deadline_s
    while True:
        info: ConsumerInfo = await js.consumer_info(EVENTS_STREAM, durable)
        if info.num_ack_pending == 0 or time.monotonic() > end:
            return info
        await asyncio.sleep(0.05)


async def test_the_drafter_heartbeats_so_a_slow_llm_call_is_delivered_once(nc: Client) -> None:
    assert NLP_DRAFTER.heartbeat  # the real durable has it on
    assert await deliveries_of_one_slow_answer(nc, "nlp-drafter-hb", heartbeat=True) == [1]


async def test_without_heartbeats_the_same_call_would_be_handed_out_again(nc: Client) -> None:
    """The control: proves the test above can fail."""
    assert (await deliveries_of_one_slow_answer(nc, "nlp-drafter-nohb", heartbeat=False))[:2] == [1, 2]
