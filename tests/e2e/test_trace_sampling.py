"""With a ratio sampler, a message is traced whole or not at all: an unsampled message's context
still travels (else the next stage would start a trace of its own, sampled half the time, and
leave fragments), and spans arrive by OTLP/gRPC through the exporter's lean encoder
(`wxbot_common.span_export`), as on a busy deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import World, find_message_trace, running_world, send_text, wecom_event_id
from wxbot_devkit.otlp_sink import SpanRecord

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MESSAGES = 12  # at a 0.5 ratio, all or none sampled by chance: 2 × 0.5**12 ≈ 0.05 %
MESSAGE_SPAN_NAMES = ("wxbot.evt.", "GetHistory", "chat ", "/wecom/callback")


def _roots(spans: list[SpanRecord]) -> set[str]:
    """Trace ids of the callbacks' root spans."""
    return {
        s.trace_id
        for s in spans
        if s.service_name == "gateway" and s.kind == "SERVER" and not s.parent_span_id and "POST" in s.name
    }


@pytest.fixture(scope="module")
async def sampled_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    async with running_world(tmp_path_factory.mktemp("sampled"), env=env, otlp_protocol="grpc") as world:
        yield world


async def test_each_message_is_traced_whole_or_not_at_all(sampled_world: World) -> None:
    world = sampled_world
    msg_ids: list[int] = []
    for i in range(MESSAGES):
        _, msg_id = await send_text(world, f"e2e-sampled-{i}", f"sampled question {i}")
        msg_ids.append(msg_id)
    for i in range(MESSAGES):
        await world.wecom.wait_for_messages(f"e2e-sampled-{i}", 1, timeout=30)

    def _strays(spans: list[SpanRecord]) -> list[str]:
        rooted = _roots(spans)
        return [s.name for s in spans if any(n in s.name for n in MESSAGE_SPAN_NAMES) and s.trace_id not in rooted]

    def traced_whole(spans: list[SpanRecord]) -> list[int] | None:
        # each service exports in its own batches, so a trace's downstream spans may arrive before
        # the gateway's root: settle once every traced message is whole and no span lacks its root
        roots = _roots(spans)
        traced = [m for m in msg_ids if find_message_trace(spans, wecom_event_id(m)) is not None]
        return traced if roots and len(traced) == len(roots) and not _strays(spans) else None

    try:
        traced = await world.sink.wait_for(traced_whole, timeout=30)
    except TimeoutError:
        # no fragment of an unsampled message: every message span belongs to a trace with its root
        pytest.fail(f"spans of traces without a gateway root: {_strays(world.sink.spans)}")
    assert 0 < len(traced) < MESSAGES, "a 0.5 ratio sampled every message or none"
