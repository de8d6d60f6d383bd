"""`make run`'s supervision with real processes: whatever is SIGKILLed comes back, nothing is lost.

One supervised, persisting stack (as `make run` starts it) for the module; each test kills one
process and waits, with a deadline, for the supervisor to report it ready again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import nats
import pytest
from redis.asyncio import Redis

from tests.e2e.harness import World, running_world, send_text, send_until_accepted
from wxbot_common.nats.subjects import EVENTS_STREAM
from wxbot_common.redis_client import create_redis
from wxbot_devkit.fakes.waiting import wait_until, wait_until_async

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
async def sw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"SHUTDOWN_GRACE_S": "1"}
    async with running_world(tmp_path_factory.mktemp("supervised"), env, supervise=True, persist=True) as world:
        yield world


def replies(world: World, user: str) -> list[str]:
    """The texts WeCom delivered to `user`, without the fake LLM's history count."""
    return [m.content.split(" (saw")[0] for m in world.wecom.messages_for(user)]


async def kill_and_see_it_die(world: World, name: str) -> int:
    """SIGKILL `name` and wait until the supervisor has noticed; the killed pid."""
    sup = world.stack.supervisor
    before = sup.restarts(name)
    pid = world.stack.kill(name)
    await wait_until(lambda: sup.restarts(name) > before, 10, f"the supervisor to see {name} die")
    return pid


def service_restarts(world: World) -> dict[str, int]:
    sup = world.stack.supervisor
    return {r.child.name: sup.restarts(r.child.name) for r in world.stack.replicas}


async def stream_messages(world: World) -> int:
    nc = await nats.connect(world.stack.nats.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        return int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages)
    finally:
        await nc.close()


async def projected(redis: Redis, text: str) -> None:
    """Until a conversation's stored turns hold `text` (the context projection runs after the reply)."""

    async def stored() -> bool:
        async for key in redis.scan_iter(match="wxbot:ctx:*:turns"):
            turns = await redis.lrange(key, 0, -1)
            if any(text in (t.decode() if isinstance(t, bytes) else t) for t in turns):
                return True
        return False

    await wait_until_async(stored, 15.0, f"a stored turn holding {text!r}", every_s=0.05)


async def written_to_the_aof(redis: Redis) -> None:
    """Until Redis has written everything it acknowledged to its append-only file, which a killed
    redis-server keeps (the kernel has it). With `appendfsync everysec` Redis may hold writes back
    for up to 2 s while the previous fsync is slow (a slow CI disk): that documented window is not
    what this test is about, so it waits it out instead of racing it."""

    async def written() -> bool:
        return not (await redis.info("persistence"))["aof_buffer_length"]

    await wait_until_async(written, 15.0, "Redis to write its AOF buffer", every_s=0.05)


async def test_a_killed_nlp_comes_back_and_answers_what_came_while_it_was_down(sw: World) -> None:
    user = "e2e-sup-nlp"
    sup = sw.stack.supervisor
    pid = await kill_and_see_it_die(sw, "nlp")
    resp, _ = await send_text(sw, user, "sent while nlp was down")
    assert resp.status_code == 200
    restart = await sup.wait_running("nlp", timeout_s=30)
    assert restart.reason == "killed by SIGKILL" and restart.pid == pid
    await send_text(sw, user, "sent after it came back")
    await sw.wecom.wait_for_messages(user, 2, timeout=30)
    assert replies(sw, user) == ["LLM says: sent while nlp was down", "LLM says: sent after it came back"]
    assert any(f"nlp (pid {pid}) killed by SIGKILL" in line and "restart 1 in 0.5 s" in line for line in sup.log)


async def test_a_killed_gateway_comes_back_on_its_port(sw: World) -> None:
    user = "e2e-sup-gateway"
    await kill_and_see_it_die(sw, "gateway")
    # Refused while it is down; WeCom retries the same callback until the new gateway takes it.
    await send_until_accepted(sw, user, "sent while the gateway restarted")
    await sw.stack.supervisor.wait_running("gateway", timeout_s=30)
    await send_text(sw, user, "and after")
    await sw.wecom.wait_for_messages(user, 2, timeout=30)
    assert replies(sw, user) == ["LLM says: sent while the gateway restarted", "LLM says: and after"]


@pytest.mark.parametrize("service", ["safety", "context"])
async def test_a_killed_service_comes_back_on_its_ports(sw: World, service: str) -> None:
    user = f"e2e-sup-{service}"
    await kill_and_see_it_die(sw, service)
    restart = await sw.stack.supervisor.wait_running(service, timeout_s=30)
    assert restart.downtime_s is not None
    await send_text(sw, user, "are you all there?")  # context: nlp asks it over gRPC, on the same port
    await sw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(sw, user, "still?")
    await sw.wecom.wait_for_messages(user, 2, timeout=30)
    assert replies(sw, user) == ["LLM says: are you all there?", "LLM says: still?"]


async def test_a_killed_nats_server_comes_back_with_its_data(sw: World) -> None:
    user = "e2e-sup-nats"
    services_before = service_restarts(sw)
    sw.llm.hang = True  # the message is acknowledged by JetStream and in nlp's hands when NATS dies
    try:
        asked = len(sw.llm.requests)
        resp, _ = await send_text(sw, user, "asked before the crash")
        assert resp.status_code == 200
        await sw.llm.wait_for_requests(asked + 1, timeout=20)
        stored = await stream_messages(sw)
        await kill_and_see_it_die(sw, "nats")
        await sw.stack.supervisor.wait_running("nats", timeout_s=30)
    finally:
        sw.llm.hang = False
    assert await stream_messages(sw) >= stored  # the file store survived
    await sw.wecom.wait_for_messages(user, 1, timeout=45)  # consumers ask again once reconnected
    await send_until_accepted(sw, user, "asked after the crash")
    await sw.wecom.wait_for_messages(user, 2, timeout=45)
    assert replies(sw, user) == ["LLM says: asked before the crash", "LLM says: asked after the crash"]
    assert service_restarts(sw) == services_before  # they reconnected; none crashed


async def test_a_killed_redis_server_comes_back_with_its_data(sw: World) -> None:
    user = "e2e-sup-redis"
    services_before = service_restarts(sw)
    await send_text(sw, user, "my name is Bob")
    await sw.wecom.wait_for_messages(user, 1, timeout=30)
    redis = create_redis(sw.stack.redis.url)
    try:
        await projected(redis, "LLM says: my name is Bob")  # context has the exchange, not only WeCom
        await redis.set("e2e:supervision:probe", "kept")
        await written_to_the_aof(redis)
    finally:
        await redis.aclose()
    await kill_and_see_it_die(sw, "redis")
    await sw.stack.supervisor.wait_running("redis", timeout_s=30)
    redis = create_redis(sw.stack.redis.url)
    try:
        assert await redis.get("e2e:supervision:probe") == b"kept"  # the append-only file was replayed
    finally:
        await redis.aclose()
    await send_until_accepted(sw, user, "what is my name?")
    await sw.wecom.wait_for_messages(user, 2, timeout=45)
    assert replies(sw, user) == ["LLM says: my name is Bob", "LLM says: what is my name?"]
    assert sw.wecom.messages_for(user)[1].content.endswith("(saw 4 messages)")  # the history is still there
    assert service_restarts(sw) == services_before


async def test_stopping_the_stack_restarts_nothing(sw: World) -> None:
    """Last in the module: it stops the module's stack (stopping again at teardown is harmless)."""
    stack, sup = sw.stack, sw.stack.supervisor
    pid = await kill_and_see_it_die(sw, "nlp")  # a restart is due within a second, while the stack stops
    assert sup.phase("nlp") == "backoff"
    children = [p.child for p in stack.processes().values()]
    await stack.stop()
    assert not sup.watching
    assert next(r for r in stack.replicas if r.service == "nlp").child.pid == pid  # never started again
    for child in children:
        assert child.returncode is not None, f"{child.name} still runs"
        assert child.pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)
