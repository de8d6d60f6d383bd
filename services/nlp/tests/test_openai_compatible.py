"""The OpenAI-compatible backend against a real local HTTP server speaking the protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_nlp.llm import LlmRejectedError, LlmUnavailableError
from wxbot_nlp.openai_compatible import OpenAICompatibleBackend

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key="sk-test", reply=lambda r: f"echo {r.last_user_message} 你好")
    await fake.start()
    yield fake
    await fake.stop()


def backend(llm: FakeLLM, client: httpx.AsyncClient, stream: bool, key: str = "sk-test") -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(client, f"{llm.base_url}/v1", key, "m1", 5.0, 256, 0.2, stream)


@pytest.mark.parametrize("stream", [False, True])
async def test_completion_text_model_and_usage(llm: FakeLLM, stream: bool) -> None:
    async with httpx.AsyncClient() as client:
        done = await backend(llm, client, stream).complete([{"role": "user", "content": "hi"}])
    assert done.text == "echo hi 你好"
    assert done.model == "m1" and done.prompt_tokens > 0 and done.completion_tokens > 0
    assert llm.requests[-1].stream is stream


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limits_carry_retry_after_and_server_errors_are_retryable(llm: FakeLLM, stream: bool) -> None:
    llm.retry_after_s = 2.0
    llm.fail_next(429, 503)
    async with httpx.AsyncClient() as client:
        b = backend(llm, client, stream)
        with pytest.raises(LlmUnavailableError) as limited:
            await b.complete([{"role": "user", "content": "hi"}])
        assert limited.value.retry_after_s == 2.0
        with pytest.raises(LlmUnavailableError):
            await b.complete([{"role": "user", "content": "hi"}])


async def test_a_bad_key_is_rejected_not_retried(llm: FakeLLM) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(LlmRejectedError):
            await backend(llm, client, False, key="sk-wrong").complete([{"role": "user", "content": "hi"}])
