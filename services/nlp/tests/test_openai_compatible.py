"""The OpenAI-compatible backend against a real local HTTP server speaking the protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from multidict import CIMultiDict

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_devkit.fakes.llm import ChatRequest, FakeLLM, ToolCall
from wxbot_devkit.launch import free_port
from wxbot_nlp.llm import LlmRejectedError, LlmUnavailableError, Message
from wxbot_nlp.media_out import DrawTool
from wxbot_nlp.openai_compatible import OpenAICompatibleBackend, retry_after_s
from wxbot_nlp.skills.registry import Tool

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key="sk-test", reply=lambda r: f"echo {r.last_user_message} 你好")
    await fake.start()
    yield fake
    await fake.stop()


def backend(
    llm: FakeLLM, client: TracedHttp, stream: bool, key: str = "sk-test", timeout_s: float = 5.0
) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(client, f"{llm.base_url}/v1", key, "m1", timeout_s, 256, 0.2, stream)


@pytest.mark.parametrize("stream", [False, True])
async def test_completion_text_model_and_usage(llm: FakeLLM, stream: bool) -> None:
    async with TracedHttp(create_session(16, 10.0)) as client:
        done = await backend(llm, client, stream).complete([{"role": "user", "content": "hi"}])
    assert done.text == "echo hi 你好"
    assert done.model == "m1" and done.prompt_tokens > 0 and done.completion_tokens > 0
    assert llm.requests[-1].stream is stream


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limits_carry_retry_after_and_server_errors_are_retryable(llm: FakeLLM, stream: bool) -> None:
    llm.retry_after_s = 2.0
    llm.fail_next(429, 503)
    async with TracedHttp(create_session(16, 10.0)) as client:
        b = backend(llm, client, stream)
        with pytest.raises(LlmUnavailableError) as limited:
            await b.complete([{"role": "user", "content": "hi"}])
        assert limited.value.retry_after_s == 2.0 and limited.value.kind == "rate_limited"
        with pytest.raises(LlmUnavailableError) as failed:
            await b.complete([{"role": "user", "content": "hi"}])
        assert failed.value.kind == "server_error"


async def test_a_bad_key_is_rejected_not_retried(llm: FakeLLM) -> None:
    async with TracedHttp(create_session(16, 10.0)) as client:
        with pytest.raises(LlmRejectedError):
            await backend(llm, client, False, key="sk-wrong").complete([{"role": "user", "content": "hi"}])


async def test_a_stream_that_trickles_past_the_timeout_is_a_timeout(llm: FakeLLM) -> None:
    """Every chunk arrives well within the read timeout, the whole answer does not: the per-call
    timeout bounds the call, so a slow stream cannot hold a message for ever."""
    llm.reply = lambda _r: " ".join(["word"] * 20)
    llm.stream_chunk_delay_s = 0.2
    async with TracedHttp(create_session(16, 10.0)) as client:
        with pytest.raises(LlmUnavailableError) as slow:
            await backend(llm, client, True, timeout_s=1.0).complete([{"role": "user", "content": "hi"}])
    assert slow.value.kind == "timeout"


async def test_an_unreachable_endpoint_is_a_network_error() -> None:
    async with TracedHttp(create_session(16, 10.0)) as client:
        gone = OpenAICompatibleBackend(client, f"http://127.0.0.1:{free_port()}/v1", "", "m1", 5.0, 256, 0.2)
        with pytest.raises(LlmUnavailableError) as down:
            await gone.complete([{"role": "user", "content": "hi"}])
    assert down.value.kind == "network"


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "3", "retry-after-ms": "1500"}, 1.5),  # OpenAI's finer header wins
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),  # an HTTP date, 10 s after "now"
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_in_seconds_milliseconds_or_as_a_date(headers: dict[str, str], wait: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s(CIMultiDict(headers), now=now) == wait


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call_weather_then_answer(request: ChatRequest) -> str | list[ToolCall]:
    if request.tool_results:
        return "answer: " + " + ".join(request.tool_results.values())
    return [ToolCall("weather", {"city": "北京"}, id="c1"), ToolCall("weather", {"city": "上海"}, id="c2")]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_back_whole_and_their_results_go_to_the_model(llm: FakeLLM, stream: bool) -> None:
    llm.reply = call_weather_then_answer
    ask: list[Message] = [{"role": "user", "content": "weather?"}]
    async with TracedHttp(create_session(16, 10.0)) as client:
        b = backend(llm, client, stream)
        calls = await b.complete(ask, [WEATHER])
        assert calls.text == ""
        assert [(c.id, c.name, json.loads(c.arguments)) for c in calls.tool_calls] == [
            ("c1", "weather", {"city": "北京"}),
            ("c2", "weather", {"city": "上海"}),
        ]
        assert llm.requests[-1].body["tool_choice"] == "auto" and llm.requests[-1].tools == ["weather"]
        answered = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [c.to_message() for c in calls.tool_calls]},
            {"role": "tool", "tool_call_id": "c1", "content": "晴"},
            {"role": "tool", "tool_call_id": "c2", "content": "雨"},
        ]
        done = await b.complete(answered, [WEATHER], "none")
    assert done.text == "answer: 晴 + 雨" and done.tool_calls == ()


async def test_a_tool_call_left_unanswered_is_rejected_as_openai_does(llm: FakeLLM) -> None:
    unanswered: list[Message] = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [ToolCall("weather", id="c1").to_json()]},
        {"role": "user", "content": "well?"},
    ]
    async with TracedHttp(create_session(16, 10.0)) as client:
        with pytest.raises(LlmRejectedError, match="did not have response messages: c1"):
            await backend(llm, client, False).complete(unanswered, [WEATHER])


async def test_tools_arrive_whole_and_a_changed_tool_is_sent_as_it_is_now(llm: FakeLLM) -> None:
    """The tools' JSON is made once per definition (ToolsJson): what the model receives must still
    be each definition exactly, in the order given, and a tool redeployed with another contract
    (a new `Tool`, hence a new definition) must reach the model in its new form at once."""
    city = {"type": "object", "properties": {"city": {"type": "string"}}}
    old = Tool("weather", "Weather in a city", city, "s", "w", "1")
    draw = DrawTool(drawer=None)  # type: ignore[arg-type]  # only its definition is used here
    async with TracedHttp(create_session(16, 10.0)) as client:
        b = backend(llm, client, False)
        for _ in range(2):
            await b.complete([{"role": "user", "content": "hi"}], [old.definition(), draw.definition()], "none")
            assert llm.requests[-1].body["tools"] == [old.definition(), draw.definition()]
            assert llm.requests[-1].body["tool_choice"] == "none"
        new = Tool("weather", "Weather, by city and day", {"type": "object", "properties": {}}, "s", "w", "2")
        await b.complete([{"role": "user", "content": "hi"}], [new.definition()])
    assert llm.requests[-1].body["tools"] == [new.definition()] != [old.definition()]
    assert llm.requests[-1].body["tool_choice"] == "auto"
