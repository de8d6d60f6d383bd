"""Skills end to end: third-party processes join a running stack over NATS, the (fake) LLM calls
them, and every failure still ends in exactly one answer to the user.

One stack for the module; the skill processes start after it, as a third party's would.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import World, find_message_trace, running_world, wecom_event_id
from tests.e2e.skill_helpers import (
    DEADLINE_S,  # the per-call timeout stays at its default (10 s)
    DELIVERY_S,
    WITHIN_S,
    ask,
    drafted_once,
    registered,
    tool_message,
    wait_offered,
)
from wxbot_devkit.fakes.llm import ChatRequest, ToolCall
from wxbot_devkit.launch import Child
from wxbot_devkit.otlp_sink import SpanRecord
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOOLS = {"lookup_order", "sleep_forever", "prose", "huge"}
ROOT = Path(__file__).resolve().parents[2]

# The model, scripted: a question names the tool call to make; once results are back it answers
# with what the tools said.
CALLS = {
    "where is order A-42": ToolCall("lookup_order", {"order_id": "A-42"}),
    "check the warehouse": ToolCall("sleep_forever"),
    "unknown tool": ToolCall("no_such_tool", {"x": 1}),
    "bad arguments": ToolCall("lookup_order", {"order_id": 42}),
    "not json": ToolCall("prose"),
    "one megabyte": ToolCall("huge"),
}


def model(request: ChatRequest) -> str | list[ToolCall]:
    if request.tool_results:
        return "answer from tools: " + " | ".join(r[:300] for r in request.tool_results.values())
    call = CALLS.get(request.last_user_message)
    if call is None or not request.may_call_tools:
        return f"no tools needed; offered: {','.join(sorted(request.tools)) or 'none'}"
    return [ToolCall(call.name, call.arguments)]  # a fresh call id every time


@pytest.fixture(scope="module")
async def sw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    # Only this module's third-party skills: the built-in ones (services/skills) have tests of their own.
    env = {"LLM_ANSWER_DEADLINE_S": str(DEADLINE_S), "LLM_RETRIES": "0", "SKILLS_ALLOW": "orders,misbehaving"}
    async with running_world(tmp_path_factory.mktemp("skills"), env, reply=model) as world:
        yield world


@dataclass
class SkillProcesses:
    sdk: Child
    raw: Child
    registered_at: float  # time.monotonic() when both answered discovery


@pytest.fixture(scope="module")
async def skills(sw: World) -> AsyncIterator[SkillProcesses]:
    """The two skill processes, started after the stack; with the moment both had registered."""
    env = {**sw.stack.env, "NATS_URL": sw.stack.nats.url, "LOG_FORMAT": "console", "SHUTDOWN_GRACE_S": "1"}
    command = [sys.executable, "-m", "tests.e2e.skill_processes"]
    sdk = Child("orders", [*command, "sdk"], {**env, "OTEL_SERVICE_NAME": "orders"}, ROOT)
    raw = Child("raw-skill", [*command, "raw"], env, ROOT)
    await sdk.start()
    await raw.start()
    try:
        await registered(sw, "orders")
        await registered(sw, "misbehaving")
        yield SkillProcesses(sdk, raw, time.monotonic())
    finally:
        await sdk.stop()
        await raw.stop()


async def test_a_skill_started_after_the_stack_is_offered_and_its_result_answers_the_user(
    sw: World, skills: SkillProcesses
) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S - (time.monotonic() - skills.registered_at))
    user = "e2e-skill-order"
    reply, _ = await ask(sw, user, "where is order A-42")
    asked = next(r for r in sw.llm.requests if r.last_user_message == "where is order A-42")
    assert set(asked.tools) == TOOLS
    order = next(t for t in asked.body["tools"] if t["function"]["name"] == "lookup_order")["function"]
    assert order["description"] == "Look up the status of an order by its id."
    assert order["parameters"]["required"] == ["order_id"]
    # The skill got the arguments (it echoes the id) and the user got the answer built from its result.
    result = json.loads(tool_message(sw, "where is order A-42"))
    assert result == {
        "order_id": "A-42",
        "status": "shipped",
        "eta": "明天",
    }
    assert reply == 'answer from tools: {"order_id":"A-42","status":"shipped","eta":"明天"}'
    assert (await drafted_once(sw, user)).source == ev.REPLY_SOURCE_LLM


def with_skill_span(trace: list[SpanRecord] | None) -> list[SpanRecord] | None:
    """The message's trace once the skill's own span has arrived too: it is exported by the skill's
    process, on its own schedule, and may come after the services' spans."""
    if trace is None or not any(s.service_name == "orders" and s.kind == "SERVER" for s in trace):
        return None
    return trace


async def test_the_trace_shows_the_skill_call_as_the_skills_span_under_nlps_client_span(
    sw: World, skills: SkillProcesses
) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S)
    # The question of the test above: an answer built from tool results is live data, not cached,
    # so this one asks the model and calls the skill again (find_message_trace needs the chat span).
    _, msg_id = await ask(sw, "e2e-skill-trace", "where is order A-42")
    trace = await sw.sink.wait_for(
        lambda spans: with_skill_span(find_message_trace(spans, wecom_event_id(msg_id))), timeout=30
    )
    [client] = [
        s for s in trace if s.service_name == "nlp" and s.kind == "CLIENT" and s.name.startswith("execute_tool")
    ]
    [server] = [s for s in trace if s.service_name == "orders" and s.kind == "SERVER"]
    assert server.parent_span_id == client.span_id and server.name == "execute_tool lookup_order"
    drafting = next(s for s in trace if s.span_id == client.parent_span_id)
    assert drafting.service_name == "nlp" and drafting.kind == "CONSUMER"
    assert client.attributes["gen_ai.tool.name"] == "lookup_order" and client.attributes["messaging.system"] == "nats"
    assert "A-42" not in str(client.attributes) + str(server.attributes)  # arguments are content: not in spans


async def test_a_skill_that_never_answers_still_leaves_one_answer_within_the_deadline(
    sw: World, skills: SkillProcesses
) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S)
    user = "e2e-skill-sleepy"
    started = time.monotonic()
    reply, _ = await ask(sw, user, "check the warehouse")
    assert time.monotonic() - started < DEADLINE_S + DELIVERY_S
    assert "did not answer within" in reply  # the model heard why, and answered
    assert (await drafted_once(sw, user)).source == ev.REPLY_SOURCE_LLM


@pytest.mark.parametrize(
    ("question", "error"),
    [
        ("unknown tool", "no tool named 'no_such_tool' is available"),
        ("bad arguments", "arguments do not match the schema at order_id: 42 is not of type 'string'"),
        ("not json", "the skill replied with something that is not JSON"),
        ("one megabyte", "[truncated: the result had 1000000 characters; only the first 8000 are shown]"),
    ],
)
async def test_a_bad_call_or_reply_is_a_plain_result_to_the_model_and_one_answer(
    sw: World, skills: SkillProcesses, question: str, error: str
) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S)
    user = f"e2e-skill-{question.replace(' ', '-')}"
    reply, _ = await ask(sw, user, question)
    assert error in tool_message(sw, question)
    assert reply.startswith("answer from tools: ")
    assert (await drafted_once(sw, user)).source == ev.REPLY_SOURCE_LLM


async def test_a_skill_command_calls_it_directly(sw: World, skills: SkillProcesses) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S)
    user = "e2e-skill-command"
    before = len(sw.llm.requests)
    reply, _ = await ask(sw, user, "/order B-7")
    assert json.loads(reply) == {"order_id": "B-7", "status": "shipped", "eta": "明天"}
    assert len(sw.llm.requests) == before  # no model involved
    assert (await drafted_once(sw, user)).source == ev.REPLY_SOURCE_COMMAND


async def test_a_skill_whose_last_instance_stopped_is_no_longer_offered(sw: World, skills: SkillProcesses) -> None:
    await wait_offered(sw, len(TOOLS), WITHIN_S)
    sdk = skills.sdk
    stopping = time.monotonic()  # SIGTERM: the instance leaves NATS at once, its process soon after
    await sdk.stop()
    await wait_offered(sw, len(TOOLS) - 2, WITHIN_S - (time.monotonic() - stopping))
    reply, _ = await ask(sw, "e2e-skill-gone", "which tools are there now")
    assert reply == "no tools needed; offered: huge,prose"  # what the model was offered
