"""A message redelivered after its reply was published — an nlp replica stopped between publishing
and acknowledging, possibly long after JetStream's duplicate window — is acknowledged without a
second LLM call or a second reply. Real NATS; the context service is unreachable, so a drafter
that went on to answer would fail loudly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from wxbot_common.errors import TransientError
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_devkit.launch import nats_client
from wxbot_nlp.drafting import APOLOGY
from wxbot_nlp.handlers import Drafter, DraftingPolicy, NlpMetrics
from wxbot_nlp.kb import KnowledgeBase
from wxbot_nlp.llm import Completion, Message, ToolChoice
from wxbot_nlp.resilience import ResilientBackend, Tools
from wxbot_nlp.variants import Variant
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)
NOWHERE = "127.0.0.1:9"  # discard port: nothing listens, GetHistory fails at once


class CountingLLM:
    model = "m"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(
        self, messages: list[Message], tools: Tools = None, tool_choice: ToolChoice | None = None
    ) -> Completion:
        self.calls += 1
        return Completion("a second answer", self.model, 1, 1)


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    async with nats_client(Path(tmp_path_factory.mktemp("nats"))) as client:
        yield client


@pytest.fixture
async def drafter(nc: Client) -> AsyncIterator[tuple[Drafter, CountingLLM, EventPublisher]]:
    publisher = EventPublisher(nc.jetstream(), trace.get_tracer("test"))
    llm = CountingLLM()
    channel = grpc.aio.insecure_channel(NOWHERE)
    policy = DraftingPolicy(0, 1.0, 0.45, 0.85, max_deliver=5, answer_deadline_s=5.0)
    yield (
        Drafter(
            publisher,
            ctx_grpc.ContextServiceStub(channel),
            {"default": ResilientBackend(llm)},
            [Variant("default").resolve("m", 0.7, "")],
            KnowledgeBase([]),
            None,
            policy,
            NlpMetrics(CollectorRegistry()),
        ),
        llm,
        publisher,
    )
    await channel.close(grace=None)


async def accepted_delivery(nc: Client, publisher: EventPublisher, name: str) -> tuple[ev.InboundAccepted, int]:
    accepted = ev.InboundAccepted()
    accepted.meta.event_id = f"accepted-{name}"
    accepted.meta.conversation_id = f"wecom:test:user:{name}"
    accepted.message.text = "a question"
    accepted.message.reply_to.user_id = name
    return accepted, (await publisher.publish(accepted)).seq


async def redelivered(nc: Client, accepted: ev.InboundAccepted, seq: int, num_delivered: int) -> Delivery:
    """`accepted` as the drafter's consumer hands it over on its `num_delivered`-th delivery."""
    sub = await nc.jetstream().pull_subscribe(
        EventKind.ACCEPTED.subject(accepted.meta.conversation_id),
        stream=EVENTS_STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq, ack_policy=AckPolicy.NONE
        ),
    )
    [msg] = await sub.fetch(1, timeout=5)
    await sub.unsubscribe()
    assert msg.metadata.sequence.stream == seq
    return Delivery(EventKind.ACCEPTED, accepted, seq, num_delivered, msg)


async def drafted_count(nc: Client, conversation_id: str) -> int:
    subject = EventKind.DRAFTED.subject(conversation_id)
    info = await nc.jetstream().stream_info(EVENTS_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def publish_reply(publisher: EventPublisher, accepted: ev.InboundAccepted, text: str) -> None:
    drafted = ev.ReplyDrafted(reply_to=accepted.message.reply_to, text=text, source=ev.REPLY_SOURCE_NOTICE)
    derive_meta(drafted.meta, accepted.meta, "nlp", "drafted")
    await publisher.publish(drafted)


async def test_a_redelivery_whose_reply_is_in_the_log_is_acknowledged_without_answering(
    nc: Client, drafter: tuple[Drafter, CountingLLM, EventPublisher]
) -> None:
    handler, llm, publisher = drafter
    accepted, seq = await accepted_delivery(nc, publisher, "answered")
    await publish_reply(publisher, accepted, APOLOGY)  # the first delivery's apology, at its deadline
    await handler.handle(await redelivered(nc, accepted, seq, num_delivered=2))
    assert llm.calls == 0 and await drafted_count(nc, accepted.meta.conversation_id) == 1


async def test_a_redelivery_without_a_logged_reply_is_answered(
    nc: Client, drafter: tuple[Drafter, CountingLLM, EventPublisher]
) -> None:
    """The control: with no reply of its own in the log (an earlier message's does not count), the
    drafter goes on to answer — and here fails on the unreachable context, to be redelivered."""
    handler, _, publisher = drafter
    earlier, _ = await accepted_delivery(nc, publisher, "pending")
    accepted = ev.InboundAccepted()
    accepted.CopyFrom(earlier)
    accepted.meta.event_id = "accepted-pending-2"
    seq = (await publisher.publish(accepted)).seq
    await publish_reply(publisher, earlier, "the reply to the earlier message")  # logged after ours
    with pytest.raises(TransientError, match="context unavailable"):
        await handler.handle(await redelivered(nc, accepted, seq, num_delivered=2))
