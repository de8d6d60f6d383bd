"""MCP servers as skills, end to end: a real MCP server (the SDK's own, streamable HTTP on loopback)
listed in SKILLS_MCP_SERVERS of a whole stack, next to a NATS skill process; the (fake) LLM calls
its tools, and every failure — of the server, its tools, or names two skills claim — still ends in
exactly one answer to the user.

One stack for the module; the MCP server starts first (its URL is configuration), the NATS skill
processes after the stack, as a third party's would.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import World, find_message_trace, running_world, wecom_event_id
from tests.e2e.skill_helpers import (
    DEADLINE_S,
    DELIVERY_S,
    WITHIN_S,
    ask,
    drafted_once,
    nlp_metric,
    registered,
    tool_message,
    wait_offered,
)
from wxbot_devkit.fakes.llm import ChatRequest, ToolCall
from wxbot_devkit.fakes.mcp import HUGE_CHARS, FakeMcpServer
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.launch import Child
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

RESULT_MAX_CHARS = 3000  # SKILLS_RESULT_MAX_CHARS of this stack
MCP_TOOLS = {"forecast", "slow", "broken", "huge", "picture"}  # its lookup_order is the NATS skill's
NATS_TOOLS = {"lookup_order", "sleep_forever"}
ROOT = Path(__file__).resolve().parents[2]

CALLS = {
    "weather in Beijing": ToolCall("forecast", {"city": "北京"}),
    "weather, wrongly": ToolCall("forecast", {"city": 7}),
    "is the weather service up": ToolCall("broken"),
    "take your time": ToolCall("slow", {"seconds": 30}),
    "everything please": ToolCall("huge"),
    "show me the sky": ToolCall("picture"),
    "where is order A-42": ToolCall("lookup_order", {"order_id": "A-42"}),
    "look up the twin key": ToolCall("twin_lookup", {"key": "k"}),
    "look up the twin key again": ToolCall("twin_lookup", {"key": "k"}),  # another text: no cached answer
}


def model(request: ChatRequest) -> str | list[ToolCall]:
    if request.tool_results:
        return "answer from tools: " + " | ".join(r[:300] for r in request.tool_results.values())
    call = CALLS.get(request.last_user_message)
    if call is None or not request.may_call_tools:
        return f"no tools needed; offered: {','.join(sorted(request.tools)) or 'none'}"
    return [ToolCall(call.name, call.arguments)]


@pytest.fixture(scope="module")
async def weather() -> AsyncIterator[FakeMcpServer]:
    server = FakeMcpServer("weather-mcp", version="3.1.0")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def mw(tmp_path_factory: pytest.TempPathFactory, weather: FakeMcpServer) -> AsyncIterator[World]:
    env = {
        "LLM_ANSWER_DEADLINE_S": str(DEADLINE_S),
        "LLM_RETRIES": "0",
        "SKILLS_RESULT_MAX_CHARS": str(RESULT_MAX_CHARS),
        "SKILLS_MCP_SERVERS": f"weather={weather.url}",
        # This module's tools only: not the built-in ones of services/skills (its weather is a NATS skill).
        "SKILLS_ALLOW": ",".join(sorted(MCP_TOOLS | NATS_TOOLS | {"twin_lookup"})),
    }
    async with running_world(tmp_path_factory.mktemp("skills-mcp"), env, reply=model) as world:
        yield world


def skill_process(world: World, name: str, mode: str) -> Child:
    env = {**world.stack.env, "NATS_URL": world.stack.nats.url, "LOG_FORMAT": "console", "SHUTDOWN_GRACE_S": "1"}
    return Child(name, [sys.executable, "-m", "tests.e2e.skill_processes", mode], env, ROOT)


@pytest.fixture(scope="module")
async def orders(mw: World) -> AsyncIterator[Child]:
    """The NATS skill whose lookup_order the MCP server's tool of that name meets."""
    child = skill_process(mw, "orders", "sdk")
    await child.start()
    try:
        await registered(mw, "orders")
        yield child
    finally:
        await child.stop()


def nlp_logged(world: World, text: str) -> bool:
    return any(text in line for line in world.stack.logs("nlp"))


async def test_an_mcp_servers_tools_answer_the_user_and_the_call_is_traced_to_the_server(
    mw: World, weather: FakeMcpServer, orders: Child
) -> None:
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    assert await nlp_metric(mw, 'wxbot_nlp_mcp_server_up{server="weather"}') == 1
    reply, msg_id = await ask(mw, "e2e-mcp-weather", "weather in Beijing")
    assert reply == "answer from tools: Sunny in 北京, 25°C"
    asked = next(r for r in mw.llm.requests if r.last_user_message == "weather in Beijing")
    assert set(asked.tools) == MCP_TOOLS | NATS_TOOLS
    forecast = next(t for t in asked.body["tools"] if t["function"]["name"] == "forecast")["function"]
    assert forecast["description"] == "The weather in a city today."  # the server's own words and schema
    assert forecast["parameters"]["required"] == ["city"]
    assert (await drafted_once(mw, "e2e-mcp-weather")).source == ev.REPLY_SOURCE_LLM

    trace = await mw.sink.wait_for(lambda spans: find_message_trace(spans, wecom_event_id(msg_id)), timeout=30)
    [client] = [s for s in trace if s.service_name == "nlp" and s.name == "execute_tool forecast"]
    assert client.kind == "CLIENT" and client.attributes["mcp.method.name"] == "tools/call"
    assert client.attributes["wxbot.skill.service"] == "weather" and client.attributes["wxbot.skill.source"] == "mcp"
    assert client.attributes["wxbot.skill.version"] == "3.1.0"
    [sent] = [s for s in trace if s.parent_span_id == client.span_id]  # the SDK's request span, under ours
    assert sent.name == "MCP send tools/call forecast"
    [call] = [c for c in weather.calls if c.arguments == {"city": "北京"}]
    assert call.traceparent is not None and call.traceparent.split("-")[1] == client.trace_id  # the server has it
    assert "北京" not in str(client.attributes) + str(sent.attributes)  # arguments are content: not in spans
    # Listing every few seconds is not traced: no tools/list span anywhere.
    assert not [s for s in mw.sink.spans if "tools/list" in s.name]


@pytest.mark.parametrize(
    ("question", "says"),
    [
        ("is the weather service up", "Error executing tool broken: the upstream weather service is down"),
        ("take your time", "the skill did not answer within"),
        ("weather, wrongly", "arguments do not match the schema at city: 7 is not of type 'string'"),
        ("show me the sky", "[image: image/png, 66 bytes, not shown]\na clear blue sky"),
        (
            "everything please",
            f"[truncated: the result had {HUGE_CHARS} characters; only the first {RESULT_MAX_CHARS} are shown]",
        ),
    ],
)
async def test_an_mcp_tool_that_fails_or_overflows_is_a_plain_result_and_one_answer(
    mw: World, orders: Child, question: str, says: str
) -> None:
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    user = f"e2e-mcp-{question.replace(' ', '-').replace(',', '')}"
    started = time.monotonic()
    reply, _ = await ask(mw, user, question)
    assert time.monotonic() - started < DEADLINE_S + DELIVERY_S
    result = tool_message(mw, question)
    assert says in result
    if question == "everything please":
        assert len(result) == RESULT_MAX_CHARS + len(says) + 1  # the budget, a newline, the note
    assert reply.startswith("answer from tools: ")
    assert (await drafted_once(mw, user)).source == ev.REPLY_SOURCE_LLM


async def test_a_name_an_mcp_tool_shares_with_a_nats_skill_calls_the_nats_skill(
    mw: World, weather: FakeMcpServer, orders: Child
) -> None:
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    reply, _ = await ask(mw, "e2e-mcp-clash", "where is order A-42")
    assert reply == 'answer from tools: {"order_id":"A-42","status":"shipped","eta":"明天"}'  # the NATS skill's
    assert not [c for c in weather.calls if c.name == "lookup_order"]
    assert nlp_logged(mw, "lookup_order: MCP server weather's tool is not offered: the NATS skill orders has that name")


async def test_an_mcp_server_that_goes_away_is_dropped_within_15_s_and_offered_again_when_back(
    mw: World, weather: FakeMcpServer, orders: Child
) -> None:
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    gone = time.monotonic()
    await weather.refuse_connections()
    try:
        await wait_offered(mw, len(NATS_TOOLS), WITHIN_S)
        assert time.monotonic() - gone < WITHIN_S
        assert await nlp_metric(mw, 'wxbot_nlp_mcp_server_up{server="weather"}') == 0
        reply, _ = await ask(mw, "e2e-mcp-gone", "which tools are there now")  # not held up by the dead server
        assert reply == "no tools needed; offered: lookup_order,sleep_forever"
    finally:
        await weather.accept_connections()
    back = time.monotonic()
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    assert time.monotonic() - back < WITHIN_S
    reply, _ = await ask(mw, "e2e-mcp-back", "weather in Beijing")
    assert reply == "answer from tools: Sunny in 北京, 25°C"


async def test_two_instances_of_one_skill_that_disagree_on_a_tool_are_not_offered_until_one_is_left(
    mw: World, orders: Child
) -> None:
    await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), WITHIN_S)
    twins = [skill_process(mw, f"twin-{v}", f"twin-{v}") for v in ("a", "b")]
    for twin in twins:
        await twin.start()
    try:
        # Same service, same version, different schemas: a call could reach either, so neither is offered.
        await wait_until(
            lambda: nlp_logged(mw, "twin_lookup: live instances of version 1.0.0 disagree on it; not offered"),
            WITHIN_S,
            "nlp to see both twins",
        )
        await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS), 1)
        reply, _ = await ask(mw, "e2e-mcp-twins", "look up the twin key")
        asked = next(r for r in mw.llm.requests if r.last_user_message == "look up the twin key")
        assert "twin_lookup" not in asked.tools  # a model that calls it anyway is told so, plainly
        assert "no tool named 'twin_lookup' is available" in reply
        await twins[1].stop()  # one definition left: it is offered, and answers
        await wait_offered(mw, len(MCP_TOOLS | NATS_TOOLS) + 1, WITHIN_S)
        reply, _ = await ask(mw, "e2e-mcp-twin-a", "look up the twin key again")
        assert json.loads(tool_message(mw, "look up the twin key again")) == {"variant": "a", "got": {"key": "k"}}
        assert reply.startswith("answer from tools: ")
    finally:
        for twin in twins:
            await twin.stop()
