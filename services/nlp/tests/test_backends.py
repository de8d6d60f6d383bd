"""The backends the service builds from its settings, against real local OpenAI-compatible
servers: retries with Retry-After, the fallback endpoint, the breaker and the error metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_nlp.app import build_backends
from wxbot_nlp.handlers import NlpMetrics
from wxbot_nlp.llm import Completion, LlmUnavailableError
from wxbot_nlp.resilience import ResilientBackend
from wxbot_nlp.settings import NlpSettings

pytestmark = pytest.mark.timeout(30)
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def primary() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key="sk-primary", reply=lambda r: f"primary {r.model}")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fallback() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key="sk-fallback", reply=lambda r: f"fallback {r.model}")
    await fake.start()
    yield fake
    await fake.stop()


class Built:
    def __init__(self, registry: CollectorRegistry, backends: dict[str, ResilientBackend]) -> None:
        self.registry = registry
        self.backend = backends["default"]

    def errors(self, kind: str) -> float:
        return self.registry.get_sample_value("wxbot_nlp_errors_total", {"kind": kind, "variant": "default"}) or 0.0

    def circuit_open(self) -> float | None:
        return self.registry.get_sample_value("wxbot_nlp_llm_circuit_open", {"variant": "default"})


def build(client: TracedHttp, llm: FakeLLM, **values: Any) -> Built:
    defaults: dict[str, Any] = {"llm_timeout_s": 2.0, "llm_backoff_base_s": 0.01}
    settings = NlpSettings(
        _env_file=None,
        llm_base_url=f"{llm.base_url}/v1",
        llm_api_key="sk-primary",
        llm_model="main-model",
        **(defaults | values),
    )
    registry = CollectorRegistry()
    backends = build_backends(settings, client, settings.variants(), NlpMetrics(registry))
    assert backends is not None
    return Built(registry, backends)


async def test_two_server_errors_then_the_answer(primary: FakeLLM) -> None:
    primary.fail_next(500, 502)
    async with TracedHttp(create_session(16, 10.0)) as client:
        built = build(client, primary, llm_retries=2)
        done = await built.backend.complete(ASK)
    assert done.text == "primary main-model" and len(primary.requests) == 3
    assert built.errors("server_error") == 2


async def test_a_rate_limit_is_waited_out_as_retry_after_asks(primary: FakeLLM) -> None:
    primary.retry_after_s = 1.0
    primary.fail_next(429)
    async with TracedHttp(create_session(16, 10.0)) as client:
        built = build(client, primary, llm_retries=1)
        await built.backend.complete(ASK)
    first, second = primary.requests
    assert second.received_at - first.received_at >= 0.95  # backoff alone would be ~10 ms
    assert built.errors("rate_limited") == 1


async def test_the_fallback_endpoint_answers_when_the_primary_is_down(primary: FakeLLM, fallback: FakeLLM) -> None:
    primary.fail_next(503, 503)
    async with TracedHttp(create_session(16, 10.0)) as client:
        built = build(
            client,
            primary,
            llm_retries=1,
            llm_fallback_base_url=f"{fallback.base_url}/v1",
            llm_fallback_api_key="sk-fallback",
            llm_fallback_model="spare-model",
        )
        done = await built.backend.complete(ASK)
    assert done.text == "fallback spare-model" and done.model == "spare-model"
    assert len(primary.requests) == 2 and len(fallback.requests) == 1
    assert built.errors("fallback") == 1


async def test_an_open_circuit_skips_the_llm_then_lets_one_trial_through(primary: FakeLLM) -> None:
    primary.fail_next(500)
    async with TracedHttp(create_session(16, 10.0)) as client:
        built = build(client, primary, llm_retries=0, llm_breaker_threshold=1, llm_breaker_cooldown_s=0.5)
        with pytest.raises(LlmUnavailableError):
            await built.backend.complete(ASK)
        assert built.circuit_open() == 1.0
        with pytest.raises(LlmUnavailableError) as skipped:
            await built.backend.complete(ASK)
        assert skipped.value.kind == "circuit_open" and len(primary.requests) == 1  # not called while open
        done, skipped_calls = await _first_answer_after_cooldown(built.backend, deadline_s=5.0)
    assert done.text == "primary main-model" and skipped_calls >= 1
    assert len(primary.requests) == 2  # the failure and the one trial: every call in between skipped it
    assert built.circuit_open() == 0.0


async def _first_answer_after_cooldown(backend: ResilientBackend, deadline_s: float) -> tuple[Completion, int]:
    """Call until the circuit lets a trial through; how many calls it refused meanwhile."""
    refused = 0
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await backend.complete(ASK), refused
        except LlmUnavailableError as exc:
            assert exc.kind == "circuit_open" and time.monotonic() < end
            refused += 1
            await asyncio.sleep(0.05)


async def test_a_hung_llm_is_given_up_at_the_answer_deadline_not_after_every_attempt(primary: FakeLLM) -> None:
    """LLM_TIMEOUT_S 10 and two retries would take 30 s; LLM_ANSWER_DEADLINE_S 1 ends it in 1."""
    primary.hang = True
    async with TracedHttp(create_session(16, 10.0)) as client:
        built = build(client, primary, llm_timeout_s=10.0, llm_retries=2, llm_answer_deadline_s=1.0)
        started = time.monotonic()
        with pytest.raises(LlmUnavailableError) as gave_up:
            await built.backend.complete(ASK)
        took = time.monotonic() - started
    assert gave_up.value.kind == "timeout" and 0.9 <= took < 2.0
    assert len(primary.requests) == 1  # no retry could have finished in the time left
    await wait_until(lambda: primary.stats()["abandoned"] == 1, 5, "the hung call to be hung up on")
    assert built.errors("timeout") == 1 and built.errors("deadline") == 1
