"""Conversation memory as users experience it: in order, bounded, resettable, rebuildable, durable."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from tests.e2e.harness import CONFIG, LLM_KEY, SECRET, World, llm_reply, running_world, send_text, wecom_env
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.launch import Child
from wxbot_devkit.system import Stack, StackConfig
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_proto.context.v1 import context_pb2 as pb
from wxbot_proto.context.v1 import context_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def ctx(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"CONTEXT_MAX_TURNS": "4"}
    async with running_world(tmp_path_factory.mktemp("context"), env, replicas={"nlp": 2, "context": 2}) as world:
        yield world


def conversation(user: str) -> str:
    return wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)


async def history(world: World, user: str) -> list[tuple[int, str]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.stack.grpc_ports[0]}") as channel:
        resp = await pb_grpc.ContextServiceStub(channel).GetHistory(
            pb.GetHistoryRequest(conversation_id=conversation(user)), timeout=10
        )
    return [(t.role, t.text) for t in resp.turns]


def contents(messages: list[dict[str, object]]) -> list[str]:
    return [str(m.get("content")) for m in messages if m.get("role") != "system"]


async def test_back_to_back_messages_are_answered_in_order_with_two_nlp_replicas(ctx: World) -> None:
    ctx.llm.latency_s = 0.4  # the first answer is still being drafted when the second message arrives
    try:
        for user in ("e2e-order-1", "e2e-order-2", "e2e-order-3"):
            await send_text(ctx, user, "first, remember 42")
            await send_text(ctx, user, "second, what did I say?")
        for user in ("e2e-order-1", "e2e-order-2", "e2e-order-3"):
            replies = await ctx.wecom.wait_for_messages(user, 2, timeout=30)
            assert [m.content for m in replies] == [
                "LLM says: first, remember 42 (saw 2 messages)",
                "LLM says: second, what did I say? (saw 4 messages)",
            ]
    finally:
        ctx.llm.latency_s = 0.0
    second = [r for r in ctx.llm.requests if r.last_user_message == "second, what did I say?"]
    assert len(second) == 3
    for request in second:
        assert contents(request.messages) == [
            "first, remember 42",
            "LLM says: first, remember 42 (saw 2 messages)",
            "second, what did I say?",
        ]


async def test_history_keeps_only_the_newest_turns(ctx: World) -> None:
    user = "e2e-max-turns"
    for i in range(1, 5):
        await send_text(ctx, user, f"message {i}")
        await ctx.wecom.wait_for_messages(user, i, timeout=20)
    newest = ["message 3", "LLM says: message 3", "message 4", "LLM says: message 4"]  # CONTEXT_MAX_TURNS=4

    async def kept() -> list[str] | None:
        texts = [text.split(" (saw")[0] for _, text in await history(ctx, user)]
        return texts if texts == newest else None

    deadline = asyncio.get_running_loop().time() + 20
    while await kept() is None:
        assert asyncio.get_running_loop().time() < deadline, await history(ctx, user)
        await asyncio.sleep(0.1)
    last = next(r for r in ctx.llm.requests if r.last_user_message == "message 4")
    assert len(contents(last.messages)) <= 5 and "message 1" not in contents(last.messages)


async def test_history_is_kept_after_redis_forgets_its_scripts(ctx: World) -> None:
    """A restarted Redis has no scripts cached: the projection loads its own again, nothing lost."""
    user = "e2e-script-flush"
    await send_text(ctx, user, "before the flush")
    await ctx.wecom.wait_for_messages(user, 1, timeout=20)
    redis = Redis.from_url(ctx.stack.redis.url)
    try:
        await redis.script_flush()
    finally:
        await redis.aclose()
    await send_text(ctx, user, "after the flush")
    replies = await ctx.wecom.wait_for_messages(user, 2, timeout=20)
    assert replies[1].content == "LLM says: after the flush (saw 4 messages)"  # the first turn was remembered


async def test_reset_is_confirmed_and_forgets_the_conversation(ctx: World) -> None:
    user = "e2e-reset"
    await send_text(ctx, user, "my secret is tulip")
    await ctx.wecom.wait_for_messages(user, 1, timeout=20)
    await send_text(ctx, user, "/reset")
    replies = await ctx.wecom.wait_for_messages(user, 2, timeout=20)
    assert not replies[1].content.startswith("LLM says")  # the confirmation comes from wxbot itself
    await send_text(ctx, user, "what is my secret?")
    await ctx.wecom.wait_for_messages(user, 3, timeout=20)
    ask = next(r for r in ctx.llm.requests if r.last_user_message == "what is my secret?")
    assert contents(ask.messages) == ["what is my secret?"]


async def test_lookups_asked_together_are_answered_at_once_unless_they_must_wait(ctx: World) -> None:
    """GetHistories answers what needs no waiting and sends the rest back to GetHistory, which waits:
    a conversation whose earlier message is still being answered never holds up the others."""
    settled, busy = "e2e-batch-settled", "e2e-batch-busy"
    await send_text(ctx, settled, "settled question")
    await ctx.wecom.wait_for_messages(settled, 1, timeout=20)
    ctx.llm.latency_s = 3.0  # the busy conversation's message stays unanswered while we ask
    try:
        await send_text(ctx, busy, "busy question")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ctx.stack.grpc_ports[0]}") as channel:
            stub = pb_grpc.ContextServiceStub(channel)
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # until the busy message is projected and this replica knows it has got that far
                seen = await stub.GetHistory(pb.GetHistoryRequest(conversation_id=conversation(busy)), timeout=5)
                if seen.turns and seen.applied_sequence > seen.turns[0].origin_sequence:
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            after = seen.turns[0].origin_sequence + 1  # the busy message, still unanswered, comes before

            def lookup(user: str, min_sequence: int) -> pb.HistoryLookup:
                conversation_id = conversation(user) if user else ""
                return pb.HistoryLookup(
                    request=pb.GetHistoryRequest(conversation_id=conversation_id, min_sequence=min_sequence)
                )

            asked = pb.GetHistoriesRequest(
                lookups=[
                    lookup(settled, after),
                    lookup(busy, after),  # its earlier message is unanswered: it must wait
                    lookup("e2e-batch-future", after + 10_000),  # the projection is not there yet
                    lookup("", after),  # invalid alone, so alone it is asked (and refused)
                ]
            )
            started = asyncio.get_running_loop().time()
            answered = await stub.GetHistories(asked, timeout=5)
            assert asyncio.get_running_loop().time() - started < 2.0  # nothing in it waited for the LLM
            results = list(answered.results)
            outcomes = [r.WhichOneof("outcome") for r in results]
            assert outcomes == ["history", "retry_alone", "retry_alone", "retry_alone"]
            assert results[0].history.complete
            assert [(t.role, t.text) for t in results[0].history.turns] == [
                (pb.ROLE_USER, "settled question"),
                (pb.ROLE_ASSISTANT, "LLM says: settled question (saw 2 messages)"),
            ]
            # asked alone, the busy lookup waits for its answer and then sees it
            alone = await stub.GetHistory(asked.lookups[1].request, timeout=15)
            assert alone.complete and [t.text for t in alone.turns] == [
                "busy question",
                "LLM says: busy question (saw 2 messages)",
            ]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetHistory(asked.lookups[3].request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        ctx.llm.latency_s = 0.0


async def test_context_serves_health_and_reflection(ctx: World) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ctx.stack.grpc_ports[0]}") as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="wxbot.context.v1.ContextService"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in stub.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in answer.list_services_response.service}
            assert "wxbot.context.v1.ContextService" in names
            break


async def test_rebuild_from_the_log_into_an_empty_redis_yields_the_same_histories(ctx: World) -> None:
    users = ["e2e-order-1", "e2e-max-turns", "e2e-reset"]

    async def settled() -> dict[str, list[tuple[int, str]]] | None:
        """Each history once its last reply is projected (a loaded box may still be applying it)."""
        found = {u: await history(ctx, u) for u in users}
        return found if all(h and h[-1][0] == pb.ROLE_ASSISTANT for h in found.values()) else None

    deadline = asyncio.get_running_loop().time() + 20
    while (before := await settled()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the projection never caught up"
        await asyncio.sleep(0.1)
    redis_cli = Child("flush", [sys.executable, "-c", _FLUSH, ctx.stack.redis.url])
    await redis_cli.start()
    assert await redis_cli.wait(timeout_s=20) == 0
    # No "really empty" check here: with the lease key flushed too, a live replica may take the lease
    # at once and start projecting the log again from its beginning (the position is gone as well).

    env = {**ctx.stack.env, "NATS_URL": ctx.stack.nats.url, "REDIS_URL": ctx.stack.redis.url, "CONTEXT_MAX_TURNS": "4"}
    rebuild = Child("rebuild", [sys.executable, "-m", "wxbot_context", "rebuild", "--timeout", "60"], env=env)
    await rebuild.start()
    assert await rebuild.wait(timeout_s=90) == 0, rebuild.tail()
    assert "replayed" in rebuild.tail()
    assert {u: await history(ctx, u) for u in users} == before


_FLUSH = "import sys, redis; redis.Redis.from_url(sys.argv[1]).flushall()"


async def test_context_survives_a_restart_of_every_process(tmp_path: Path) -> None:
    wecom = FakeWeCom(corp_id=CONFIG["corpid"], corp_secret=SECRET)
    llm = FakeLLM(api_key=LLM_KEY, reply=llm_reply)
    await wecom.start()
    await llm.start()
    config = StackConfig(run_dir=tmp_path, ports="free", extra_env=wecom_env(wecom, llm), persist=True)
    user = "e2e-restart"
    try:
        async with Stack(config) as stack:
            world = World(stack, wecom, llm, sink=None)  # type: ignore[arg-type]
            await send_text(world, user, "remember: the door code is 1234")
            await wecom.wait_for_messages(user, 1, timeout=20)
        async with Stack(config) as stack:  # NATS and Redis restart from their files
            world = World(stack, wecom, llm, sink=None)  # type: ignore[arg-type]
            await send_text(world, user, "what is the door code?")
            await wecom.wait_for_messages(user, 2, timeout=30)
        ask = next(r for r in llm.requests if r.last_user_message == "what is the door code?")
        assert contents(ask.messages) == [
            "remember: the door code is 1234",
            "LLM says: remember: the door code is 1234 (saw 2 messages)",
            "what is the door code?",
        ]
    finally:
        await llm.stop()
        await wecom.stop()
        await asyncio.sleep(0)


async def _leaders(world: World) -> list[bool]:
    """Which context replicas hold the projection lease, from their own /metrics."""
    found: list[bool] = []
    async with httpx.AsyncClient(timeout=5) as client:
        for url in world.stack.service_urls()["context"]:
            try:
                text = (await client.get(f"{url}/metrics")).text
            except httpx.HTTPError:
                found.append(False)
                continue
            found.append("wxbot_context_projection_leader 1.0" in text)
    return found


async def test_one_replica_projects_and_the_other_takes_over_when_it_dies(tmp_path: Path) -> None:
    env = {"CONTEXT_LEASE_TTL_S": "2"}
    async with running_world(tmp_path, env, replicas={"context": 2}) as world:
        user = "e2e-lease"
        await send_text(world, user, "remember: the gate code is 9876")
        await world.wecom.wait_for_messages(user, 1, timeout=20)
        leaders = await _leaders(world)
        assert leaders.count(True) == 1, leaders  # the other replica writes nothing: no repeated projection

        leader = [r for r in world.stack.replicas if r.service == "context"][leaders.index(True)]
        assert leader.child.pid is not None
        os.kill(leader.child.pid, signal.SIGKILL)
        await send_text(world, user, "what is the gate code?")
        replies = await world.wecom.wait_for_messages(user, 2, timeout=40)
        assert replies[1].content == "LLM says: what is the gate code? (saw 4 messages)"
        ask = next(r for r in world.llm.requests if r.last_user_message == "what is the gate code?")
        assert contents(ask.messages) == [
            "remember: the gate code is 9876",
            "LLM says: remember: the gate code is 9876 (saw 2 messages)",
            "what is the gate code?",
        ]
        survivor = 1 - leaders.index(True)
        deadline = asyncio.get_running_loop().time() + 20
        while not (await _leaders(world))[survivor]:
            assert asyncio.get_running_loop().time() < deadline, "the surviving replica never took the lease"
            await asyncio.sleep(0.1)
