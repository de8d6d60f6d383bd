"""The weather skill end to end: the stack's skills service serves it against a fake Open-Meteo,
the scripted model calls `weather`, and the user gets the report — or, with `/weather 北京`, gets it
without the model; an upstream that fails or hangs still leaves exactly one plain answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.harness import CONFIG, World, logged, running_world, send_text
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.llm import ChatRequest, ToolCall
from wxbot_devkit.fakes.weather import Conditions, Day, FakeOpenMeteo
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEADLINE_S = 8.0  # LLM_ANSWER_DEADLINE_S: a call may take half, 4 s, more than WEATHER_TIMEOUT_S
WEATHER_TIMEOUT_S = 2.0
DELIVERY_S = 10.0
OFFERED_WITHIN_S = 15.0  # the skill contract
CAPITAL = (39.9075, 116.39723)
BEIJING = Conditions(3, 12.5, 10.9, 60, 9.7, (Day(3, 15.0, 4.4, 10), Day(61, 11.6, 2.5, 80), Day(0, 17.0, 1.0, 0)))

CALLS = {
    "北京天气怎么样": ToolCall("weather", {"place": "北京"}),
    "what's the weather in Shanghai": ToolCall("weather", {"place": "Shanghai", "days": 2}),
}


def model(request: ChatRequest) -> str | list[ToolCall]:
    """Calls the tool a question names; with the result back, answers with exactly what it said."""
    if request.tool_results:
        return "天气助手：" + " | ".join(request.tool_results.values())
    call = CALLS.get(request.last_user_message)
    if call is None or not request.may_call_tools:
        return f"no tools needed; offered: {','.join(sorted(request.tools)) or 'none'}"
    return [ToolCall(call.name, call.arguments)]


@pytest.fixture(scope="module")
async def fake_api() -> AsyncIterator[FakeOpenMeteo]:
    fake = FakeOpenMeteo()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def ww(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeOpenMeteo) -> AsyncIterator[World]:
    env = {
        "LLM_ANSWER_DEADLINE_S": str(DEADLINE_S),
        "LLM_RETRIES": "0",
        "WEATHER_GEOCODING_URL": fake_api.base_url,
        "WEATHER_FORECAST_URL": fake_api.base_url,
        "WEATHER_TIMEOUT_S": str(WEATHER_TIMEOUT_S),
        "SKILLS_ALLOW": "weather",  # the model sees this one tool (reminders have tests of their own)
    }
    async with running_world(tmp_path_factory.mktemp("weather"), env, reply=model) as world:
        yield world


@pytest.fixture(scope="module")
async def upstream(ww: World, fake_api: FakeOpenMeteo) -> FakeOpenMeteo:
    """The fake Open-Meteo, once nlp offers the skills service's weather tool."""
    await offered(ww, OFFERED_WITHIN_S)
    return fake_api


@pytest.fixture
async def weather(upstream: FakeOpenMeteo) -> FakeOpenMeteo:
    upstream.reset()
    upstream.set_conditions(*CAPITAL, BEIJING)
    return upstream


async def offered(world: World, within_s: float) -> None:
    """Poll nlp's `wxbot_nlp_skills_offered` gauge until it shows the one tool."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            text = (await client.get(f"{world.stack.service_urls()['nlp'][0]}/metrics")).text
            if "wxbot_nlp_skills_offered 1.0" in text.splitlines():
                return
            assert time.monotonic() < deadline, f"the weather tool was not offered within {within_s} s"
            await asyncio.sleep(0.2)


async def ask(world: World, user: str, text: str) -> str:
    """Send `text` and wait for the one reply."""
    await send_text(world, user, text)
    [reply] = await world.wecom.wait_for_messages(user, 1, timeout=DEADLINE_S + DELIVERY_S)
    return reply.content


async def source(world: World, user: str) -> ev.ReplySource.ValueType:
    """Who wrote the user's one drafted reply (the model, or a command)."""
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    [drafted] = [ev.ReplyDrafted.FromString(d) for d in await logged(world, EventKind.DRAFTED, conversation)]
    return drafted.source


def tool_result(world: World, question: str) -> str:
    """What the model was given back for the call it made for `question`."""
    request = next(r for r in world.llm.requests if r.tool_results and r.last_user_message == question)
    [content] = request.tool_results.values()
    return content


async def test_the_model_calls_weather_and_the_user_gets_the_report(ww: World, weather: FakeOpenMeteo) -> None:
    user = "e2e-weather-llm"
    reply = await ask(ww, user, "北京天气怎么样")
    asked = next(r for r in ww.llm.requests if r.last_user_message == "北京天气怎么样")
    [tool] = [t["function"] for t in asked.body["tools"]]
    assert tool["name"] == "weather" and tool["parameters"]["required"] == ["place"]
    report = tool_result(ww, "北京天气怎么样")  # the result is a JSON string: the model reads its text
    assert report.startswith("北京（中国 北京市）天气\n现在（当地时间 ")
    assert "：阴，12.5°C，体感 10.9°C，湿度 60%，风速 10 km/h\n今天 " in report
    assert "注：“北京”匹配到 3 个地点，这里是人口最多的一个" in report  # the namesakes, stated
    assert reply == f"天气助手：{report}"
    assert await source(ww, user) == ev.REPLY_SOURCE_LLM
    assert [r.endpoint for r in weather.requests] == ["search", "forecast"]


async def test_weather_command_answers_without_the_model(ww: World, weather: FakeOpenMeteo) -> None:
    user = "e2e-weather-command"
    before = len(ww.llm.requests)
    reply = await ask(ww, user, "/weather 北京")
    lines = reply.splitlines()
    assert lines[0] == "北京（中国 北京市）天气" and lines[-1] == "天气数据：Open-Meteo.com"
    assert lines[2].startswith("今天 ") and lines[2].endswith("：阴，4~15°C，降水概率 10%")
    assert len(ww.llm.requests) == before  # no model involved
    assert await source(ww, user) == ev.REPLY_SOURCE_COMMAND


async def test_weather_command_for_a_place_that_does_not_exist(ww: World, weather: FakeOpenMeteo) -> None:
    reply = await ask(ww, "e2e-weather-nowhere", "/weather Atlantis")
    assert reply.startswith("No place called “Atlantis” was found.")
    assert [r.endpoint for r in weather.requests] == ["search"]


async def test_weather_command_when_the_service_is_down_says_so_once(ww: World, weather: FakeOpenMeteo) -> None:
    weather.fail_next(503, endpoint="search")
    user = "e2e-weather-down"
    reply = await ask(ww, user, "/weather 上海")
    reason = "天气服务出错（HTTP 503），请稍后再试"
    assert reply == f"抱歉，/weather 暂时没有成功：{reason} (Sorry, /weather did not work: {reason})"
    assert await source(ww, user) == ev.REPLY_SOURCE_COMMAND


async def test_a_hung_weather_service_still_leaves_one_answer_in_time(ww: World, weather: FakeOpenMeteo) -> None:
    weather.hang = True
    user = "e2e-weather-hung"
    started = time.monotonic()
    reply = await ask(ww, user, "what's the weather in Shanghai")
    assert time.monotonic() - started < DEADLINE_S + DELIVERY_S
    error = json.loads(tool_result(ww, "what's the weather in Shanghai"))
    # The skill's own error, not nlp's call timeout: the model hears what failed.
    assert error["error"] == "the weather service did not answer within 2 s; try again later"
    assert reply.startswith("天气助手：") and "did not answer within 2 s" in reply
    assert await source(ww, user) == ev.REPLY_SOURCE_LLM
