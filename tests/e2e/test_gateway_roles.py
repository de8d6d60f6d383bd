"""GATEWAY_ROLE: callbacks in one process, reply delivery in another, every reply still sent once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.harness import World, running_world, send_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_world(tmp_path_factory.mktemp("roles"), gateway_delivery=1) as world:
        yield world


def _url(world: World, role: str) -> str:
    replica = next(r for r in world.stack.replicas if r.service == "gateway" and r.role == role)
    return f"http://127.0.0.1:{replica.http_port}"


async def test_the_ingress_takes_callbacks_and_the_delivery_process_sends_each_reply_once(split: World) -> None:
    users = [f"e2e-roles-{i}" for i in range(4)]
    assert split.stack.gateway_urls == [_url(split, "ingress")]  # WeCom is pointed at the ingress alone
    for user in users:
        response, _ = await send_text(split, user, f"hello from {user}")
        assert response.status_code == 200
    for user in users:
        replies = await split.wecom.wait_for_messages(user, 1, timeout=30)
        assert [m.content for m in replies] == [f"LLM says: hello from {user} (saw 2 messages)"]

    async with httpx.AsyncClient(timeout=5) as client:
        ingress = (await client.get(f"{_url(split, 'ingress')}/metrics")).text
        delivery = (await client.get(f"{_url(split, 'delivery')}/metrics")).text
        not_served = await client.post(f"{_url(split, 'delivery')}/wecom/callback", content=b"<xml/>")
        ready = await client.get(f"{_url(split, 'delivery')}/readyz")
    sent = [line for line in delivery.splitlines() if line.startswith("wxbot_gateway_deliveries_total")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in sent if 'outcome="sent"' in line) >= len(users)
    assert "wxbot_gateway_deliveries_total{" not in ingress  # the ingress sent nothing
    assert not_served.status_code == 404  # the delivery process takes no callbacks
    assert ready.status_code == 200
