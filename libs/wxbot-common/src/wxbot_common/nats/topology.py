"""The streams, durable consumers and media object store of wxbot, ensured idempotently (add, else update).

Run by every service at start-up and by the Kubernetes bootstrap Job:
`python -m wxbot_common.nats.topology ensure`.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_ALL_CHUNKS_PRE_TEMPLATE, OBJ_ALL_META_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

from wxbot_common.nats.subjects import (
    DLQ_PREFIX,
    DLQ_STREAM,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MEDIA_BUCKET,
    EventKind,
)

DAY_S = 86400.0


ACK_WAIT_S = 10.0


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer: which kinds it reads and how patient it is.

    `ack_wait` is how long a message whose handler died (a SIGKILLed replica) waits before another
    replica gets it. It is short, and a handler that runs longer (an LLM call, a send retried
    through an outage, a wait for the conversation's previous reply) sends `in_progress()`
    heartbeats instead: the redelivery after a crash must come well within context's order wait
    (`CONTEXT_ORDER_WAIT_S`, 30 s), or the conversation's next message would be answered first.
    """

    durable: str
    kinds: tuple[EventKind, ...]
    ack_wait_s: float = ACK_WAIT_S
    max_deliver: int = 6
    max_ack_pending: int = 2000
    description: str = ""
    heartbeat: bool = True  # send in_progress() while a handler runs longer than a few seconds
    from_start: bool = False  # a new durable reads the whole log (a projection), not only new events

    @property
    def filter_subjects(self) -> list[str]:
        return [k.wildcard for k in self.kinds]

    def config(self) -> ConsumerConfig:
        subjects = self.filter_subjects
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=DeliverPolicy.ALL if self.from_start else DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )


SAFETY_INBOUND = ConsumerSpec(
    "safety-inbound", (EventKind.RECEIVED,), description="safety: check messages on the way in"
)
SAFETY_OUTBOUND = ConsumerSpec(
    "safety-outbound", (EventKind.DRAFTED,), description="safety: check drafted replies on the way out"
)
NLP_DRAFTER = ConsumerSpec(
    "nlp-drafter",
    (EventKind.ACCEPTED,),
    max_deliver=5,
    description="nlp: draft an answer for each accepted message",
)
GATEWAY_DELIVERY = ConsumerSpec(
    "gateway-delivery",
    (EventKind.APPROVED, EventKind.REPLY_BLOCKED, EventKind.INBOUND_BLOCKED),
    description="gateway: deliver approved replies and notices",
)
ANALYTICS_PROJECTION = ConsumerSpec(
    "analytics-projection",
    tuple(EventKind),
    max_ack_pending=10_000,
    from_start=True,
    heartbeat=False,
    description="analytics: every event of the log into the ClickHouse read model",
)
ALL_CONSUMERS = (SAFETY_INBOUND, SAFETY_OUTBOUND, NLP_DRAFTER, GATEWAY_DELIVERY, ANALYTICS_PROJECTION)


@dataclass(frozen=True)
class StreamSettings:
    max_age_days: float = 30.0
    replicas: int = 1
    duplicate_window_s: float = 300.0
    max_msg_size: int = 256 * 1024
    consumers: tuple[ConsumerSpec, ...] = field(default=ALL_CONSUMERS)
    media_ttl_s: float = 3 * DAY_S  # WeCom's media ids last three days; so do our files
    media_bucket: str = MEDIA_BUCKET


def events_stream_config(s: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        description="wxbot event log: every message, verdict and reply (replayable)",
        subjects=[EVENTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=s.max_age_days * DAY_S,
        duplicate_window=s.duplicate_window_s,
        max_msg_size=s.max_msg_size,
        num_replicas=s.replicas,
        allow_direct=True,
    )


def dlq_stream_config(s: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=DLQ_STREAM,
        description="wxbot dead letters: messages a consumer could not handle",
        subjects=[f"{DLQ_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=14 * DAY_S,
        duplicate_window=120.0,
        num_replicas=s.replicas,
    )


def media_stream_config(s: StreamSettings) -> StreamConfig:
    """The stream behind the media object store, as nats-py's `create_object_store` builds it,
    so that a changed TTL updates it like any other stream (create_object_store would fail)."""
    bucket = s.media_bucket
    return StreamConfig(
        name=OBJ_STREAM_TEMPLATE.format(bucket=bucket),
        description="wxbot media: voice and image files referenced by events (expire after the TTL)",
        subjects=[OBJ_ALL_CHUNKS_PRE_TEMPLATE.format(bucket=bucket), OBJ_ALL_META_PRE_TEMPLATE.format(bucket=bucket)],
        max_age=s.media_ttl_s,
        storage=StorageType.FILE,
        num_replicas=s.replicas,
        discard=DiscardPolicy.NEW,
        allow_rollup_hdrs=True,
        allow_direct=True,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def ensure_topology(js: JetStreamContext, settings: StreamSettings | None = None) -> None:
    """Create or update the streams, the media bucket and every durable consumer; safe to run concurrently."""
    s = settings or StreamSettings()
    await _ensure_stream(js, events_stream_config(s))
    await _ensure_stream(js, dlq_stream_config(s))
    await _ensure_stream(js, media_stream_config(s))
    for spec in s.consumers:
        # Creating a durable with a changed config updates it (nats-server ≥ 2.10).
        await js.add_consumer(EVENTS_STREAM, spec.config())


async def _main(argv: list[str] | None = None) -> None:
    from wxbot_common.nats.connection import connect_nats
    from wxbot_common.settings import CommonSettings

    parser = argparse.ArgumentParser(prog="python -m wxbot_common.nats.topology")
    parser.add_argument("command", choices=["ensure"], help="create or update streams and consumers")
    parser.parse_args(argv)
    settings = CommonSettings()
    nc = await connect_nats(settings, "wxbot-topology")
    try:
        await ensure_topology(
            nc.jetstream(),
            StreamSettings(
                max_age_days=settings.stream_max_age_days,
                replicas=settings.stream_replicas,
                media_ttl_s=settings.media_ttl_s,
            ),
        )
    finally:
        await nc.drain()
    print(
        f"topology ensured: streams {EVENTS_STREAM}, {DLQ_STREAM}; object store {MEDIA_BUCKET}; consumers "
        + ", ".join(c.durable for c in ALL_CONSUMERS)
    )


if __name__ == "__main__":
    asyncio.run(_main())
