"""One inbound message is one trace, across all four services and every NATS hop."""

from __future__ import annotations

import pytest

from tests.e2e.harness import TRACED_SERVICES, World, find_message_trace, send_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_spans_of_one_message_share_a_trace_across_services(world: World) -> None:
    user = "e2e-trace"
    await send_text(world, user, "trace me")
    await world.wecom.wait_for_messages(user, 1, timeout=20)

    trace = await world.sink.wait_for(find_message_trace, timeout=30)
    by_id = {s.span_id: s for s in trace}
    consumers = [s for s in trace if s.kind == "CONSUMER"]
    assert {s.service_name for s in consumers} >= TRACED_SERVICES
    for span in consumers:  # every consumer span is parented by the producer span of its message
        parent = by_id.get(span.parent_span_id)
        assert parent is not None and parent.kind == "PRODUCER", span.name
    # gRPC hop: nlp client → context server, in the same trace
    assert any(s.service_name == "nlp" and s.kind == "CLIENT" and "GetHistory" in s.name for s in trace)
    assert any(s.service_name == "context" and s.kind == "SERVER" and "GetHistory" in s.name for s in trace)
    # an httpx span to the LLM
    assert any(
        s.service_name == "nlp" and s.kind == "CLIENT" and "chat/completions" in str(s.attributes) for s in trace
    )
