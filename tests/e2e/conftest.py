"""A whole wxbot — NATS, Redis, the four services as processes — against fake WeCom and LLM servers.

One stack per session: starting it costs seconds, and tests use distinct users so they cannot
see each other's conversations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import CONFIG, LLM_KEY, SECRET, World, llm_reply
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.otlp_sink import OtlpSink
from wxbot_devkit.system import Stack, StackConfig


@pytest.fixture(scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    wecom = FakeWeCom(corp_id=CONFIG["corpid"], corp_secret=SECRET)
    llm = FakeLLM(api_key=LLM_KEY, reply=llm_reply)
    sink = OtlpSink()
    await wecom.start()
    await llm.start()
    await sink.start()
    env = {
        "WECOM_CORP_ID": CONFIG["corpid"],
        "WECOM_AGENT_ID": CONFIG["agentid"],
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": CONFIG["token"],
        "WECOM_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "WECOM_API_BASE": wecom.base_url,
        "LLM_BASE_URL": f"{llm.base_url}/v1",
        "LLM_API_KEY": LLM_KEY,
        "LLM_MODEL": "fake-model",
        "SAFETY_RATE_PER_MINUTE": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **sink.otel_env("http/protobuf"),
    }
    stack = Stack(StackConfig(run_dir=tmp_path_factory.mktemp("stack"), ports="free", extra_env=env))
    try:
        async with stack:
            yield World(stack, wecom, llm, sink)
    finally:
        await sink.stop()
        await llm.stop()
        await wecom.stop()
