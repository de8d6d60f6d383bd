"""Answers as users get them when the LLM is flaky, slow, cached or A/B-tested — with the fake
LLM recording every request it was (or was not) sent, the event log holding what nlp drafted
and nlp's /metrics what an operator sees. (No LLM at all: test_nlp_kb.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import CONFIG, World, logged, running_world, send_text
from wxbot_common.ids import user_hash
from wxbot_common.nats.subjects import EventKind
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_nlp.drafting import APOLOGY
from wxbot_nlp.variants import assign, parse_variants
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

VARIANTS = '[{"name": "a", "weight": 1, "model": "model-a"}, {"name": "b", "weight": 1, "model": "model-b"}]'


def variant_of(user: str) -> str:
    key = user_hash(f"{ev.CHANNEL_WECOM_APP}:{CONFIG['corpid']}:{user}")
    return assign(parse_variants(VARIANTS), key).name


def users_of_variant(variant: str, prefix: str, n: int) -> list[str]:
    return [u for u in (f"{prefix}-{i}" for i in range(100)) if variant_of(u) == variant][:n]


@pytest.fixture(scope="module")
async def nw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    faq = tmp_path_factory.mktemp("kb") / "faq.yaml"
    faq.write_text(
        "- q: [报销流程是什么, how do I claim expenses]\n  a: 填写报销单并提交给财务部。\n", encoding="utf-8"
    )
    env = {
        "LLM_TIMEOUT_S": "1",  # the never-answering LLM is given up on quickly
        "LLM_RETRIES": "2",
        "LLM_BACKOFF_BASE_S": "0.05",
        "NLP_CACHE_TTL_S": "600",
        "NLP_VARIANTS": VARIANTS,
        "NLP_KB_FILES": str(faq),
    }
    async with running_world(tmp_path_factory.mktemp("nlp"), env) as world:
        yield world


def asks(world: World, *texts: str) -> int:
    return sum(1 for r in world.llm.requests if r.last_user_message in texts)


async def nlp_metric(world: World, name: str, **labels: str) -> float:
    """The sum of the samples of `name` on nlp's /metrics whose labels include `labels`."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{world.stack.service_urls()['nlp'][0]}/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def drafted_for(world: World, user: str) -> list[ev.ReplyDrafted]:
    """Every ReplyDrafted in the event log for `user`'s conversation, in log order."""
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    return [ev.ReplyDrafted.FromString(data) for data in await logged(world, EventKind.DRAFTED, conversation)]


async def test_two_server_errors_then_success_give_exactly_one_reply_the_llms(nw: World) -> None:
    user = "e2e-flaky-llm"
    errors_before = await nlp_metric(nw, "wxbot_nlp_errors_total", kind="server_error")
    nw.llm.fail_next(500, 500)
    await send_text(nw, user, "survive two 500s")
    got = await nw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(nw, user, "and then?")  # its reply comes after any stray second reply to the first
    await nw.wecom.wait_for_messages(user, 2, timeout=30)
    texts = [m.content for m in nw.wecom.messages_for(user)]
    assert got[0].content.startswith("LLM says: survive two 500s") and len(texts) == 2
    assert asks(nw, "survive two 500s") == 3
    assert await nlp_metric(nw, "wxbot_nlp_errors_total", kind="server_error") - errors_before == 2


async def test_an_llm_that_never_answers_gets_one_apology_then_recovers(nw: World) -> None:
    user = "e2e-hung-llm"
    nw.llm.hang = True
    try:
        await send_text(nw, user, "are you there?")
        got = await nw.wecom.wait_for_messages(user, 1, timeout=30)
        assert [m.content for m in got] == [APOLOGY]
        assert asks(nw, "are you there?") == 3  # the first attempt and two retries, each timed out
    finally:
        nw.llm.hang = False
    await send_text(nw, user, "back now?")
    got = await nw.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[1].content.startswith("LLM says: back now?")
    assert [m.content for m in nw.wecom.messages_for(user)].count(APOLOGY) == 1
    assert len(nw.wecom.messages_for(user)) == 2
    sources = [d.source for d in await drafted_for(nw, user)]
    assert sources == [ev.REPLY_SOURCE_NOTICE, ev.REPLY_SOURCE_LLM]
    assert await nlp_metric(nw, "wxbot_nlp_errors_total", kind="timeout") >= 3
    assert await nlp_metric(nw, "wxbot_nlp_replies_total", source="apology") >= 1


async def test_the_same_standalone_question_from_two_users_reaches_the_llm_once(nw: World) -> None:
    first_user, second_user = users_of_variant("a", "e2e-cache", 2)
    question = "What is the capital of France?"
    await send_text(nw, first_user, question)
    first = await nw.wecom.wait_for_messages(first_user, 1, timeout=20)
    await send_text(nw, second_user, "what is the capital of france")  # folded to the same question
    second = await nw.wecom.wait_for_messages(second_user, 1, timeout=20)
    assert second[0].content == first[0].content
    assert asks(nw, question, "what is the capital of france") == 1
    assert [d.source for d in await drafted_for(nw, second_user)] == [ev.REPLY_SOURCE_CACHE]
    assert await nlp_metric(nw, "wxbot_nlp_answer_cache_total", result="hit", variant="a") >= 1


async def test_the_same_new_question_asked_at_once_by_many_users_reaches_the_llm_once(nw: World) -> None:
    """Single flight: the askers who arrive while the first one's call runs wait for its answer."""
    users = users_of_variant("b", "e2e-rush", 4)
    question = "When is the all-hands meeting?"
    shared_before = await nlp_metric(nw, "wxbot_nlp_answer_cache_total", variant="b", result="joined")
    shared_before += await nlp_metric(nw, "wxbot_nlp_answer_cache_total", variant="b", result="hit")
    nw.llm.latency_s = 0.8  # within LLM_TIMEOUT_S; the other askers arrive while the first call runs
    try:
        await asyncio.gather(*(send_text(nw, u, question) for u in users))
        replies = [(await nw.wecom.wait_for_messages(u, 1, timeout=30))[0].content for u in users]
    finally:
        nw.llm.latency_s = 0.0
    assert len(set(replies)) == 1 and replies[0].startswith("LLM says: When is the all-hands meeting?")
    assert asks(nw, question) == 1
    shared = await nlp_metric(nw, "wxbot_nlp_answer_cache_total", variant="b", result="joined")
    shared += await nlp_metric(nw, "wxbot_nlp_answer_cache_total", variant="b", result="hit")
    assert shared - shared_before == 3


async def test_a_follow_up_depends_on_context_and_is_never_cached(nw: World) -> None:
    users = users_of_variant("a", "e2e-followup", 2)
    for user in users:
        await send_text(nw, user, f"hello from {user}")
        await nw.wecom.wait_for_messages(user, 1, timeout=20)
        await send_text(nw, user, "and what did I just say?")
        await nw.wecom.wait_for_messages(user, 2, timeout=20)
    assert asks(nw, "and what did I just say?") == 2  # same words, different conversations


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
        drafted = await drafted_for(nw, user)
        assert [(d.variant, d.model) for d in drafted] == [(variant_of(user), f"model-{variant_of(user)}")] * 2
        assert all(d.prompt_tokens > 0 and d.completion_tokens > 0 for d in drafted)
    assert {variant_of(u) for u in users} == {"a", "b"}
    for variant in ("a", "b"):  # latency, tokens and replies per variant, for comparing them
        assert await nlp_metric(nw, "wxbot_nlp_llm_seconds_count", variant=variant, outcome="ok") > 0
        assert await nlp_metric(nw, "wxbot_nlp_llm_tokens_total", variant=variant, direction="out") > 0
        assert await nlp_metric(nw, "wxbot_nlp_replies_total", variant=variant, source="llm") > 0


async def test_with_context_down_the_last_delivery_answers_without_history(nw: World) -> None:
    """Runs last in this module: it stops context, then brings it back."""
    user = "e2e-no-context"
    context = next(r for r in nw.stack.replicas if r.service == "context")
    await context.child.stop(grace_s=5)
    try:
        await send_text(nw, user, "answer me without memory")
        got = await nw.wecom.wait_for_messages(user, 1, timeout=60)
    finally:
        await context.child.start()
        await context.child.wait_http_ok(context.ready_url, 60)
    assert got[0].content == "LLM says: answer me without memory (saw 2 messages)"  # the system prompt and it
    assert await nlp_metric(nw, "wxbot_nlp_errors_total", kind="context_skipped") == 1
    await send_text(nw, user, "answer me without memory")  # not cached: it was answered without context
    await nw.wecom.wait_for_messages(user, 2, timeout=30)
    assert asks(nw, "answer me without memory") == 2
