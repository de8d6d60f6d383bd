"""The WebSocket bridge as a third-party client sees it, with two gateway replicas (refused handshakes
and bad frames: test_hostile_input)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.e2e.harness import World, running_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "bridge-test-token"
REPLY_WAIT_S = 30  # one reply; the module timeout covers the stack start as well


@pytest.fixture(scope="module")
async def bw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"GATEWAY_BRIDGE_TOKEN": TOKEN}
    async with running_world(tmp_path_factory.mktemp("bridge"), env, replicas={"gateway": 2}) as world:
        yield world


def ws_url(world: World, replica: int) -> str:
    return world.stack.gateway_urls[replica].replace("http://", "ws://") + "/ws/bridge"


async def frames_until(ws: websockets.ClientConnection, kind: str) -> dict[str, str]:
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == kind:
            return frame  # type: ignore[no-any-return]


async def bridge_sends(url: str) -> float:
    """How many bridge replies the gateway replica at `url` has delivered (its own metric)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wxbot_gateway_deliveries_total{")
        and 'channel="bridge"' in line
        and 'outcome="sent"' in line
    )


async def test_a_message_gets_its_reply_on_the_same_socket_across_replicas(bw: World) -> None:
    """The socket lives on replica 2; the shared delivery consumer hands replies to either replica, so
    messages are sent until replica 1 — which holds no socket — has delivered some: those replies had
    to cross to replica 2 to reach the socket."""
    other = bw.stack.gateway_urls[0]
    before = await bridge_sends(other)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    replies: dict[str, str] = {}
    async with websockets.connect(ws_url(bw, 1), additional_headers=headers, open_timeout=10) as ws:
        for i in range(20):
            sender = f"bridge-user-{i}"
            await ws.send(json.dumps({"sender": sender, "content": f"hello bridge {i}", "msg_type": "text"}))
            try:
                async with asyncio.timeout(REPLY_WAIT_S):
                    reply = await frames_until(ws, "reply")
            except TimeoutError:
                pytest.fail(f"no reply for {sender} within {REPLY_WAIT_S} s (replies so far: {sorted(replies)})")
            replies[reply["to"]] = reply["content"]
            if await bridge_sends(other) > before:
                break
    assert await bridge_sends(other) > before, "the other replica never delivered a bridge reply"
    assert replies == {f"bridge-user-{i}": f"LLM says: hello bridge {i} (saw 2 messages)" for i in range(len(replies))}
    assert bw.wecom.messages == []  # nothing leaked to the WeCom channel
