"""Helpers of the skill end-to-end tests: wait for a skill to register or for nlp to offer a count
of tools, ask the bot and get its one reply, see what the model was given."""

from __future__ import annotations

import asyncio
import time

import httpx
import nats

from tests.e2e.harness import CONFIG, World, logged, send_text
from wxbot_common.nats.subjects import EventKind
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev

DEADLINE_S = 5.0  # LLM_ANSWER_DEADLINE_S of the skill tests' stacks
DELIVERY_S = 10.0
WITHIN_S = 15.0  # the contract: offered within 15 s of registering, dropped within 15 s of leaving


async def registered(world: World, service: str) -> None:
    """Wait until a skill process answers discovery (it registered)."""
    nc = await nats.connect(world.stack.nats.url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.request(f"$SRV.PING.{service}", b"", timeout=0.5)
                return
            except nats.errors.Error:
                assert time.monotonic() < deadline, f"{service} did not register"
                await asyncio.sleep(0.1)
    finally:
        await nc.drain()


async def nlp_metric(world: World, name: str) -> float:
    """One sample of the nlp replica's /metrics (`name` with its labels, as exposed)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{world.stack.service_urls()['nlp'][0]}/metrics")).text
    found = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    assert found, f"nlp's /metrics has no {name}: is it nlp answering there?\n{text[:500]}"
    return found[0]


async def offered(world: World) -> float:
    """The nlp replica's `wxbot_nlp_skills_offered` gauge."""
    return await nlp_metric(world, "wxbot_nlp_skills_offered")


async def wait_offered(world: World, count: int, within_s: float) -> float:
    """Poll the gauge until it shows `count` tools; the seconds it took."""
    started = time.monotonic()
    while (await offered(world)) != count:
        assert time.monotonic() - started < within_s, f"{count} tools not offered within {within_s} s"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def ask(world: World, user: str, text: str) -> tuple[str, int]:
    """Send `text`, wait for the one reply; (the reply, the WeCom MsgId)."""
    _, msg_id = await send_text(world, user, text)
    [reply] = await world.wecom.wait_for_messages(user, 1, timeout=DEADLINE_S + DELIVERY_S)
    return reply.content, msg_id


async def drafted_once(world: World, user: str) -> ev.ReplyDrafted:
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    [drafted] = [ev.ReplyDrafted.FromString(d) for d in await logged(world, EventKind.DRAFTED, conversation)]
    return drafted


def tool_message(world: World, question: str) -> str:
    """What the model was given as the result of the call it made for `question`."""
    request = next(r for r in world.llm.requests if r.tool_results and r.last_user_message == question)
    [content] = request.tool_results.values()
    return content
