"""What Prometheus scrapes from each service after one message: RED and domain metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import World, send_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

EXPECTED = {
    "gateway": [
        'wxbot_http_requests_total{method="POST",route="/wecom/callback",status="200"}',
        "wxbot_http_request_seconds_bucket",
        'wxbot_gateway_callbacks_total{channel="wecom",outcome="accepted"}',
        'wxbot_gateway_deliveries_total{channel="wecom",errcode="0",outcome="sent"}',
        'wxbot_consumer_pending{durable="gateway-delivery"}',
        'wxbot_consumer_ack_pending{durable="gateway-delivery"}',
        'wxbot_consumer_messages_total{durable="gateway-delivery"',
    ],
    "safety": [
        "wxbot_safety_decisions_total",
        "wxbot_safety_check_seconds_bucket",
        'wxbot_consumer_pending{durable="safety-inbound"}',
    ],
    "nlp": [
        "wxbot_nlp_llm_seconds_bucket",
        "wxbot_nlp_llm_tokens_total",
        'wxbot_consumer_handle_seconds_bucket{durable="nlp-drafter"',
    ],
    "context": [
        'wxbot_grpc_server_requests_total{code="OK",method="/wxbot.context.v1.ContextService/GetHistory"}',
        "wxbot_grpc_server_seconds_bucket",
        "wxbot_context_events_applied_total",
        "wxbot_context_position",
    ],
    "skills": [
        'wxbot_up{service="skills"} 1.0',
        'wxbot_reminders_fired_total{outcome="drafted"}',
        "wxbot_reminders_fire_lag_seconds_bucket",
    ],
}


async def test_each_service_exposes_red_and_domain_metrics(world: World) -> None:
    user = "e2e-metrics"
    await send_text(world, user, "count me")
    await world.wecom.wait_for_messages(user, 1, timeout=20)
    urls = world.stack.service_urls()
    async with httpx.AsyncClient(timeout=5) as client:
        for service, names in EXPECTED.items():
            text = (await client.get(f"{urls[service][0]}/metrics")).text
            missing = [n for n in names if n not in text]
            assert not missing, f"{service} lacks {missing}"
            assert "/healthz" not in text and "/metrics" not in text  # ops traffic is not counted
