"""Answers as users get them when the LLM is flaky, slow, absent, cached or A/B-tested — with the
fake LLM recording every request it was (or was not) sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import CONFIG, World, running_world, send_text
from wxbot_common.ids import user_hash
from wxbot_nlp.drafting import APOLOGY, NO_LLM_NOTICE
from wxbot_nlp.variants import assign, parse_variants
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

VARIANTS = '[{"name": "a", "weight": 1, "model": "model-a"}, {"name": "b", "weight": 1, "model": "model-b"}]'


def variant_of(user: str) -> str:
    key = user_hash(f"{ev.CHANNEL_WECOM_APP}:{CONFIG['corpid']}:{user}")
    return assign(parse_variants(VARIANTS), key).name


@pytest.fixture(scope="module")
async def nw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    faq = tmp_path_factory.mktemp("kb") / "faq.yaml"
    faq.write_text(
        "- q: [报销流程是什么, how do I claim expenses]\n  a: 填写报销单并提交给财务部。\n", encoding="utf-8"
    )
    env = {
        "LLM_TIMEOUT_S": "1",
        "LLM_RETRIES": "2",
        "LLM_BACKOFF_BASE_S": "0.05",
        "NLP_CACHE_TTL_S": "600",
        "NLP_VARIANTS": VARIANTS,
        "NLP_KB_FILES": str(faq),
    }
    async with running_world(tmp_path_factory.mktemp("nlp"), env) as world:
        yield world


def asks(world: World, text: str) -> int:
    return sum(1 for r in world.llm.requests if r.last_user_message == text)


async def test_two_server_errors_then_success_give_exactly_one_reply_the_llms(nw: World) -> None:
    user = "e2e-flaky-llm"
    nw.llm.fail_next(500, 500)
    await send_text(nw, user, "survive two 500s")
    got = await nw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(nw, user, "and then?")
    await nw.wecom.wait_for_messages(user, 2, timeout=30)
    texts = [m.content for m in nw.wecom.messages_for(user)]
    assert got[0].content.startswith("LLM says: survive two 500s") and len(texts) == 2
    assert asks(nw, "survive two 500s") == 3


async def test_an_llm_that_never_answers_gets_one_apology_then_recovers(nw: World) -> None:
    user = "e2e-hung-llm"
    nw.llm.hang = True
    try:
        await send_text(nw, user, "are you there?")
        got = await nw.wecom.wait_for_messages(user, 1, timeout=30)
        assert [m.content for m in got] == [APOLOGY]
    finally:
        nw.llm.hang = False
    await send_text(nw, user, "back now?")
    got = await nw.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[1].content.startswith("LLM says: back now?")
    assert [m.content for m in nw.wecom.messages_for(user)].count(APOLOGY) == 1


async def test_the_same_standalone_question_from_two_users_reaches_the_llm_once(nw: World) -> None:
    users = [u for u in (f"e2e-cache-{i}" for i in range(20)) if variant_of(u) == "a"][:2]
    question = "What is the capital of France?"
    await send_text(nw, users[0], question)
    first = await nw.wecom.wait_for_messages(users[0], 1, timeout=20)
    await send_text(nw, users[1], "what is the capital of france")  # folded to the same question
    second = await nw.wecom.wait_for_messages(users[1], 1, timeout=20)
    assert second[0].content == first[0].content
    assert asks(nw, question) + asks(nw, "what is the capital of france") == 1


async def test_a_confident_knowledge_base_answer_needs_no_llm(nw: World) -> None:
    user = "e2e-kb-direct"
    await send_text(nw, user, "报销流程是什么？")
    got = await nw.wecom.wait_for_messages(user, 1, timeout=20)
    assert got[0].content == "填写报销单并提交给财务部。"
    assert asks(nw, "报销流程是什么？") == 0


async def test_ab_variants_are_stable_per_user_and_recorded(nw: World) -> None:
    users = [f"e2e-ab-{i}" for i in range(8)]
    for user in users:
        await send_text(nw, user, f"variant question from {user}")
    for user in users:
        await nw.wecom.wait_for_messages(user, 1, timeout=20)
        await send_text(nw, user, f"follow-up from {user}")
    for user in users:
        await nw.wecom.wait_for_messages(user, 2, timeout=20)
    for user in users:
        models = {r.model for r in nw.llm.requests if user in r.last_user_message}
        assert models == {f"model-{variant_of(user)}"}, user
    assert {variant_of(u) for u in users} == {"a", "b"}


@pytest.fixture(scope="module")
async def no_llm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_world(tmp_path_factory.mktemp("nollm"), {"LLM_BASE_URL": ""}) as world:
        yield world


@pytest.mark.parametrize(
    ("question", "expect"),
    [
        ("你好", "我是 wxbot"),
        ("what can you do?", "answer questions"),
        ("怎么接入大模型？", "LLM_BASE_URL"),
    ],
)
async def test_without_an_llm_the_shipped_knowledge_base_answers(no_llm: World, question: str, expect: str) -> None:
    user = f"e2e-nollm-{abs(hash(question)) % 10_000}"
    await send_text(no_llm, user, question)
    got = await no_llm.wecom.wait_for_messages(user, 1, timeout=20)
    assert expect in got[0].content and "LLM_BASE_URL" in got[0].content  # and says how to connect one
    assert no_llm.llm.requests == []


async def test_without_an_llm_an_unknown_question_gets_the_plain_notice(no_llm: World) -> None:
    user = "e2e-nollm-unknown"
    await send_text(no_llm, user, "季度财报什么时候发布")
    got = await no_llm.wecom.wait_for_messages(user, 1, timeout=20)
    assert got[0].content == NO_LLM_NOTICE
