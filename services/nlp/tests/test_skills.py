"""Skills against a real nats-server: discovery of raw `nats.micro` services (the contract, no SDK),
the checks and failure results of one call, and the tool loop with the fake LLM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import Service
from prometheus_client import CollectorRegistry

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.skill_contract import CallContext, tool_metadata
from wxbot_devkit.fakes.llm import ChatRequest, FakeLLM, ToolCall
from wxbot_devkit.launch import NatsServer
from wxbot_nlp.openai_compatible import OpenAICompatibleBackend
from wxbot_nlp.resilience import AnswerDeadline, ResilientBackend
from wxbot_nlp.skills.calls import SkillCaller, SkillMetrics
from wxbot_nlp.skills.commands import SkillCommands
from wxbot_nlp.skills.registry import SkillFilter, SkillRegistry
from wxbot_nlp.tool_loop import ToolLoop
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    client = await nats.connect(server.url)
    yield client
    await client.drain()
    await server.stop()


async def weather_service(nc: Client, name: str = "weather", version: str = "1.0.0") -> Service:
    """A third party's skill, written against nats.micro alone."""

    async def weather(req: Request) -> None:
        args = json.loads(req.data)
        if args["city"] == "Atlantis":
            raise ServiceError("404", "no such city")
        await req.respond(json.dumps({"city": args["city"], "sky": "晴"}, ensure_ascii=False).encode())

    async def prose(req: Request) -> None:
        await req.respond(b"sunny, I think")

    async def huge(req: Request) -> None:
        await req.respond(json.dumps("x" * 500_000).encode())

    async def sleepy(req: Request) -> None:
        await asyncio.sleep(30)

    svc = await add_service(nc, name=name, version=version, description="weather things")
    await svc.add_endpoint(
        name="weather", handler=weather, metadata=tool_metadata("Weather in a city", CITY, command="/weather")
    )
    for handler in (prose, huge, sleepy):
        meta = tool_metadata(handler.__name__, {"type": "object"})
        await svc.add_endpoint(name=handler.__name__, handler=handler, metadata=meta)
    await svc.add_endpoint(name="not_a_tool", handler=prose)  # no `parameters`: a plain endpoint
    await svc.add_endpoint(name="broken", handler=prose, metadata={"parameters": "{not json"})
    return svc


async def test_discovery_offers_live_tools_filters_them_and_drops_the_gone(nc: Client) -> None:
    clock = Clock()
    registry = SkillRegistry(nc, SkillFilter.parse("", "huge"), interval_s=5, collect_s=1.0, clock=clock)
    svc = await weather_service(nc)
    try:
        await registry.discover_once()
        assert sorted(registry.tools()) == ["prose", "sleepy", "weather"]  # denied, plain and broken are not
        weather = registry.tools()["weather"]
        assert weather.parameters == CITY and weather.subject == "weather" and weather.command == "/weather"
        assert registry.command("/weather  北京 ") == (weather, "北京")
        assert registry.command("/weathering") is None
        assert SkillFilter.parse("weather", "").admits(weather)  # by service name
        assert not SkillFilter.parse("other*", "").admits(weather)
    finally:
        await svc.stop()
    clock.now += 5  # one round missed: still offered (a lost reply must not make tools flicker)
    await registry.discover_once()
    assert "weather" in registry.tools()
    clock.now += 5
    await registry.discover_once()
    assert registry.tools() == {}


async def test_two_definitions_of_a_tool_the_newest_version_wins_equal_versions_that_disagree_are_dropped(
    nc: Client,
) -> None:
    registry = SkillRegistry(nc, SkillFilter(), collect_s=1.0)

    async def svc(name: str, version: str, description: str) -> Service:
        s = await add_service(nc, name=name, version=version)
        await s.add_endpoint(name="dup", handler=lambda r: r.respond(b"1"), metadata=tool_metadata(description, CITY))
        return s

    old, new = await svc("dup-a", "1.2.0", "old"), await svc("dup-a", "1.10.0", "new")
    try:
        await registry.discover_once()
        assert registry.tools()["dup"].description == "new"
        rival = await svc("dup-b", "1.10.0", "rival")
        try:
            await registry.discover_once()
            assert "dup" not in registry.tools()
        finally:
            await rival.stop()
    finally:
        await old.stop()
        await new.stop()


@pytest.fixture(scope="module")
async def skills(nc: Client) -> AsyncIterator[tuple[SkillRegistry, SkillCaller, CollectorRegistry]]:
    svc = await weather_service(nc, name="weather-calls")
    registry = SkillRegistry(nc, SkillFilter(), collect_s=1.0)
    await registry.discover_once()
    metrics = CollectorRegistry()
    yield registry, SkillCaller(nc, registry, SkillMetrics(metrics), result_max_chars=1000), metrics
    await svc.stop()


@pytest.mark.parametrize(
    ("tool", "arguments", "error", "says"),
    [
        ("weather", '{"city": "北京"}', None, '"sky": "晴"'),
        ("weather", '{"city": "Atlantis"}', "skill_error", "no such city"),
        ("forecast", "{}", "unknown_tool", "no tool named 'forecast'"),
        ("weather", '{"city": 7}', "invalid_arguments", "at city: 7 is not of type 'string'"),
        ("weather", "{}", "invalid_arguments", "'city' is a required property"),
        ("weather", "{city: Paris}", "invalid_arguments", "not valid JSON"),
        ("prose", "{}", "bad_reply", "not JSON"),
        ("sleepy", "{}", "timeout", "did not answer within 0.3 s"),
        ("huge", "", None, "[truncated: the result had 500000 characters; only the first 1000 are shown]"),
    ],
)
async def test_a_call_gives_the_model_a_result_or_a_plain_error(
    skills: tuple[SkillRegistry, SkillCaller, CollectorRegistry], tool: str, arguments: str, error: str, says: str
) -> None:
    _, caller, metrics = skills
    result = await caller.call(tool, arguments, timeout_s=0.3)
    assert result.error == error and says in result.content
    if error is not None:
        assert json.loads(result.content)["error"]
        label = tool if tool != "forecast" else "unknown"
        assert metrics.get_sample_value("wxbot_nlp_skill_errors_total", {"skill": label, "kind": error})


async def test_a_tool_whose_last_instance_left_is_unavailable_at_once(nc: Client) -> None:
    svc = await add_service(nc, name="gone", version="1.0.0")
    await svc.add_endpoint(name="gone", handler=lambda r: r.respond(b"1"), metadata=tool_metadata("gone", CITY))
    registry = SkillRegistry(nc, SkillFilter(), collect_s=1.0)
    await registry.discover_once()
    await svc.stop()
    caller = SkillCaller(nc, registry, SkillMetrics(CollectorRegistry()), 1000)
    result = await caller.call("gone", '{"city": "x"}', timeout_s=5)
    assert result.error == "unavailable"


async def test_a_command_calls_its_skill_with_the_rest_of_the_text(
    skills: tuple[SkillRegistry, SkillCaller, CollectorRegistry],
) -> None:
    registry, caller, _ = skills
    commands = SkillCommands(registry, caller, timeout_s=2)
    assert json.loads(await commands.run("/weather 北京") or "") == {"city": "北京", "sky": "晴"}
    assert "no such city" in (await commands.run("/WEATHER Atlantis") or "")
    assert "'city' is a required property" in (await commands.run("/weather") or "")
    assert await commands.run("weather 北京") is None


async def test_a_call_tells_the_skill_who_is_asking(nc: Client) -> None:
    seen: dict[str, str] = {}

    async def who(request: Request) -> None:
        seen.update(request.headers or {})
        await request.respond(b'"noted"')

    svc = await add_service(nc, name="who", version="1.0.0")
    await svc.add_endpoint(name="who", handler=who, metadata=tool_metadata("who asks", {"type": "object"}))
    try:
        registry = SkillRegistry(nc, SkillFilter(), collect_s=1.0)
        await registry.discover_once()
        caller = SkillCaller(nc, registry, SkillMetrics(CollectorRegistry()), 1000)
        meta = ev.EventMeta(
            event_id="accepted-7",
            correlation_id="received-7",
            conversation_id="oa:wx-app:user:openid-7",
            channel=ev.CHANNEL_OFFICIAL_ACCOUNT,
        )
        asking = CallContext.of(meta, ev.ReplyAddress(corp_id="wx-app", user_id="openid-7"))
        assert (await caller.call("who", "{}", 2, caller=asking)).ok
    finally:
        await svc.stop()
    assert seen["Wxbot-Conversation-Id"] == "oa:wx-app:user:openid-7" and seen["Wxbot-User-Id"] == "openid-7"
    assert seen["Wxbot-Channel"] == "official_account" and seen["Wxbot-Message-Id"] == "received-7"
    assert CallContext.from_headers(seen) == asking


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM()
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_loop_runs_parallel_calls_reports_failures_and_answers_once(
    skills: tuple[SkillRegistry, SkillCaller, CollectorRegistry], llm: FakeLLM
) -> None:
    registry, caller, _ = skills

    def script(request: ChatRequest) -> str | list[ToolCall]:
        if request.tool_results:
            return " | ".join(request.tool_results.values())
        return [ToolCall("weather", {"city": "北京"}), ToolCall("sleepy"), ToolCall("nope")]

    llm.reply = script
    async with TracedHttp(create_session(8, 10.0)) as http:
        backend = ResilientBackend(OpenAICompatibleBackend(http, f"{llm.base_url}/v1", "", "m", 5, 100, 0))
        loop = ToolLoop(registry, caller, max_rounds=3, call_timeout_s=0.5)
        started = asyncio.get_running_loop().time()
        answered = await loop.complete(backend, [{"role": "user", "content": "hi"}], AnswerDeadline(10))
    assert asyncio.get_running_loop().time() - started < 2  # the three calls ran side by side
    parts = answered.completion.text.split(" | ")
    assert '"sky": "晴"' in parts[0] and "did not answer within 0.5 s" in parts[1]
    assert "no tool named 'nope'" in parts[2]
    assert answered.tool_calls == 3 and len(llm.requests) == 2


async def test_rounds_are_bounded_the_last_one_forbids_calls(
    skills: tuple[SkillRegistry, SkillCaller, CollectorRegistry], llm: FakeLLM
) -> None:
    registry, caller, _ = skills
    llm.reply = lambda r: [ToolCall("weather", {"city": "北京"})] if r.may_call_tools else "enough"
    async with TracedHttp(create_session(8, 10.0)) as http:
        backend = ResilientBackend(OpenAICompatibleBackend(http, f"{llm.base_url}/v1", "", "m", 5, 100, 0))
        answered = await ToolLoop(registry, caller, max_rounds=2, call_timeout_s=1).complete(
            backend, [{"role": "user", "content": "hi"}], AnswerDeadline(10)
        )
    assert answered.completion.text == "enough" and answered.tool_calls == 2
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "none"]
