"""No lost and no doubled replies when parts of the system stop, restart or fail under it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.harness import World, running_world, send_text, send_until_accepted
from wxbot_devkit.system import Replica

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def rw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"SHUTDOWN_GRACE_S": "1"}
    async with running_world(tmp_path_factory.mktemp("resilience"), env, replicas={"nlp": 2}) as world:
        yield world


async def replica_handling(world: World, service: str, durable: str) -> Replica:
    """The replica of `service` whose consumer reports a message in flight."""
    async with httpx.AsyncClient(timeout=5) as client:
        for replica in (r for r in world.stack.replicas if r.service == service):
            text = (await client.get(f"http://127.0.0.1:{replica.http_port}/metrics")).text
            sample = f'wxbot_consumer_in_flight{{durable="{durable}"}}'
            line = next((ln for ln in text.splitlines() if ln.startswith(sample)), f"{sample} 0")
            if float(line.rsplit(" ", 1)[1]) >= 1:
                return replica
    raise AssertionError(f"no {service} replica is handling a message")


async def test_stopping_the_nlp_replica_mid_answer_hands_the_message_to_the_other(rw: World) -> None:
    user = "e2e-nlp-stop"
    rw.llm.hang = True
    try:
        await send_text(rw, user, "answer me even if you stop")
        await rw.llm.wait_for_requests(1, timeout=20)
        busy = await replica_handling(rw, "nlp", "nlp-drafter")
        await busy.child.stop(grace_s=10)  # SIGTERM while the LLM call hangs
    finally:
        rw.llm.hang = False
    replies = await rw.wecom.wait_for_messages(user, 1, timeout=30)
    assert replies[0].content.startswith("LLM says: answer me even if you stop")
    await send_text(rw, user, "and after?")
    await rw.wecom.wait_for_messages(user, 2, timeout=30)
    assert len(rw.wecom.messages_for(user)) == 2


async def test_a_nats_restart_loses_nothing(rw: World) -> None:
    user = "e2e-nats-restart"
    await send_text(rw, user, "before the restart")
    await rw.wecom.wait_for_messages(user, 1, timeout=20)
    await rw.stack.nats.child.stop(grace_s=5)
    await rw.stack.nats.start()
    await send_until_accepted(rw, user, "after the restart")
    replies = await rw.wecom.wait_for_messages(user, 2, timeout=45)
    assert [m.content.split(" (saw")[0] for m in replies] == [
        "LLM says: before the restart",
        "LLM says: after the restart",
    ]


async def test_a_redis_restart_loses_nothing(rw: World) -> None:
    user = "e2e-redis-restart"
    await rw.stack.redis.child.stop(grace_s=5)
    await rw.stack.redis.start()
    await send_until_accepted(rw, user, "after redis came back")
    replies = await rw.wecom.wait_for_messages(user, 1, timeout=45)
    assert replies[0].content.startswith("LLM says: after redis came back")
