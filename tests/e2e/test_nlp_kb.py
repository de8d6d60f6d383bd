"""With no LLM configured (`make run` on a fresh machine) the bot still answers usefully from the
knowledge base it ships about itself, and says plainly how to connect an LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import World, running_world, send_text
from wxbot_nlp.drafting import HELP_TEXT, NO_LLM_NOTICE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def no_llm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_world(tmp_path_factory.mktemp("nollm"), {"LLM_BASE_URL": ""}) as world:
        yield world


@pytest.mark.parametrize(
    ("user", "question", "expect"),
    [
        ("e2e-kb-hello", "你好", "我是 wxbot"),
        ("e2e-kb-hi", "hi!", "I'm wxbot"),
        ("e2e-kb-what-en", "what can you do?", "answer questions"),
        ("e2e-kb-what-zh", "你能做什么", "回答问题"),
        ("e2e-kb-connect", "怎么接入大模型？", "LLM_API_KEY"),
    ],
)
async def test_without_an_llm_the_shipped_knowledge_base_answers(
    no_llm: World, user: str, question: str, expect: str
) -> None:
    await send_text(no_llm, user, question)
    got = await no_llm.wecom.wait_for_messages(user, 1, timeout=20)
    assert expect in got[0].content and "LLM_BASE_URL" in got[0].content  # and says how to connect one
    assert no_llm.llm.requests == []


async def test_without_an_llm_help_still_works(no_llm: World) -> None:
    await send_text(no_llm, "e2e-kb-help", "/help")
    got = await no_llm.wecom.wait_for_messages("e2e-kb-help", 1, timeout=20)
    assert got[0].content == HELP_TEXT


async def test_without_an_llm_an_unknown_question_gets_the_plain_notice(no_llm: World) -> None:
    user = "e2e-nollm-unknown"
    await send_text(no_llm, user, "季度财报什么时候发布")
    got = await no_llm.wecom.wait_for_messages(user, 1, timeout=20)
    assert got[0].content == NO_LLM_NOTICE and "LLM_BASE_URL" in got[0].content
    assert no_llm.llm.requests == []
