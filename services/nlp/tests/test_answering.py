"""The answer policy, the knowledge base, A/B assignment, the cache key and LLM resilience."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import pytest

from wxbot_common.media.asr import ASR_OK, ASR_STATUS
from wxbot_nlp.answer_cache import AnswerCache, normalise_question
from wxbot_nlp.drafting import (
    HELP_TEXT,
    NO_LLM_NOTICE,
    NON_TEXT_NOTICE,
    RESET_DONE,
    VOICE_NOTICE,
    Route,
    build_messages,
    is_readable,
    non_text_notice,
    plan_answer,
)
from wxbot_nlp.kb import KbMatch, KnowledgeBase, load_faqs, parse_markdown, tokens
from wxbot_nlp.llm import Completion, LlmRejectedError, LlmUnavailableError, Message, ToolChoice
from wxbot_nlp.resilience import MIN_ATTEMPT_S, AnswerDeadline, CircuitBreaker, ResilientBackend, Tools
from wxbot_nlp.variants import Variant, assign, parse_variants
from wxbot_proto.events.v1 import events_pb2 as ev

SHIPPED = KnowledgeBase(load_faqs([]))
HIGH, MID, LOW = KbMatch("kb", "q", 0.95), KbMatch("kb", "q", 0.6), KbMatch("kb", "q", 0.2)


@pytest.mark.parametrize(
    ("text", "is_text", "kb", "llm", "route", "answer"),
    [
        ("/reset", True, None, True, Route.RESET, RESET_DONE),
        ("帮助", True, HIGH, False, Route.HELP, HELP_TEXT),
        ("[image]", False, HIGH, True, Route.NON_TEXT, NON_TEXT_NOTICE),
        ("q", True, HIGH, True, Route.KNOWLEDGE, "kb"),  # confident: no LLM call needed
        ("q", True, MID, True, Route.LLM, ""),  # grounds the LLM instead
        ("q", True, LOW, True, Route.LLM, ""),
        ("q", True, None, True, Route.LLM, ""),
        ("q", True, MID, False, Route.KNOWLEDGE, None),  # without an LLM any usable entry answers
        ("q", True, LOW, False, Route.NO_LLM, NO_LLM_NOTICE),
        ("q", True, None, False, Route.NO_LLM, NO_LLM_NOTICE),
    ],
)
def test_answer_policy(
    text: str, is_text: bool, kb: KbMatch | None, llm: bool, route: Route, answer: str | None
) -> None:
    plan = plan_answer(text, is_text, kb, llm, min_score=0.45, direct_score=0.85)
    assert plan.route is route
    if answer is not None:
        assert plan.text == answer
    assert plan.grounding == ("kb" if route is Route.LLM and kb is MID else "")
    if route is Route.KNOWLEDGE and not llm:
        assert "LLM_BASE_URL" in plan.text  # says plainly how to connect an LLM


def test_grounding_goes_into_the_system_message() -> None:
    msgs = build_messages("sys", [], "q", grounding="the answer")
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("sys") and "the answer" in msgs[0]["content"]


@pytest.mark.parametrize(
    ("question", "expect"),
    [
        ("你好", "我是 wxbot"),
        ("hello!", "I'm wxbot"),
        ("你能做什么？", "回答问题"),
        ("What can you do?", "answer questions"),
        ("怎么配置大模型", "LLM_BASE_URL"),
        ("how do I connect an LLM?", "LLM_BASE_URL"),
        ("如何清除记忆", "/reset"),
    ],
)
def test_the_shipped_knowledge_base_answers_greetings_and_capabilities(question: str, expect: str) -> None:
    match = SHIPPED.search(question)
    assert match is not None and match.confidence >= 0.45, (question, match)
    assert expect in match.answer


@pytest.mark.parametrize("question", ["北京明天的天气怎么样", "write a haiku about rust", "季度报销流程"])
def test_unrelated_questions_do_not_match_confidently(question: str) -> None:
    match = SHIPPED.search(question)
    assert match is None or match.confidence < 0.45, match


def test_markdown_faqs_and_chinese_tokens() -> None:
    faqs = parse_markdown("# FAQ\n\n## 报销流程 | how to claim expenses\n填写报销单后提交给财务。\n\n## 空\n")
    kb = KnowledgeBase(faqs)
    assert kb.size == 2
    match = kb.search("报销的流程是什么")
    assert match is not None and match.answer == "填写报销单后提交给财务。"
    assert tokens("你好 World") == ["你", "好", "world", "你好", "好world"]


def test_variants_are_stable_per_user_and_follow_the_weights() -> None:
    variants = parse_variants('[{"name": "a", "weight": 3, "model": "m1"}, {"name": "b", "weight": 1}]')
    assert assign(variants, "user-1") == assign(variants, "user-1")
    share = Counter(assign(variants, f"user-{i}").name for i in range(4000))
    assert 0.70 < share["a"] / 4000 < 0.80
    assert parse_variants("") == [Variant("default")]
    bad_specs = ("[]", '[{"name": "a", "weight": 0}]', '[{"name": "a"}, {"name": "a"}]', "{", '[{"weight": 1}]')
    for bad in (*bad_specs, '[{"name": "a", "weight": "x"}]', '["a"]'):
        with pytest.raises(ValueError, match="NLP_VARIANTS"):
            parse_variants(bad)


def test_variants_inherit_the_deployment_defaults_and_fingerprint_what_they_answer_with() -> None:
    a, b = parse_variants('[{"name": "a"}, {"name": "b", "model": "m2", "temperature": 0.1, "system_prompt": "p2"}]')
    ra, rb = a.resolve("m", 0.7, "p"), b.resolve("m", 0.7, "p")
    assert (ra.model, ra.temperature, ra.system_prompt) == ("m", 0.7, "p")
    assert (rb.model, rb.temperature, rb.system_prompt) == ("m2", 0.1, "p2")
    assert ra.fingerprint == a.resolve("m", 0.7, "p").fingerprint
    assert ra.fingerprint != a.resolve("m", 0.7, "another prompt").fingerprint != a.resolve("m3", 0.7, "p").fingerprint


def test_cache_keys_fold_case_width_spacing_and_final_punctuation() -> None:
    assert normalise_question("  What is WXBOT？ ") == normalise_question("what is wxbot") == "whatiswxbot"
    assert AnswerCache.key("a", "Ｈｉ!") == AnswerCache.key("a", "hi")
    assert AnswerCache.key("a", "hi") != AnswerCache.key("b", "hi")


class ScriptedLLM:
    """An in-process stand-in for an upstream: fails as scripted, then answers."""

    def __init__(self, *failures: Exception, model: str = "m") -> None:
        self.failures = list(failures)
        self.calls = 0
        self.model = model

    async def complete(
        self, messages: list[Message], tools: Tools = None, tool_choice: ToolChoice | None = None
    ) -> Completion:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return Completion(f"answer from {self.model}", self.model, 1, 1)


async def test_retries_then_succeeds_and_reports_each_failed_attempt_by_kind() -> None:
    llm = ScriptedLLM(
        LlmUnavailableError("500", kind="server_error"),
        LlmUnavailableError("429", retry_after_s=0.01, kind="rate_limited"),
    )
    kinds: list[str] = []
    backend = ResilientBackend(llm, attempts=3, backoff_base_s=0.001, on_error=kinds.append)
    assert (await backend.complete([])).text == "answer from m"
    assert llm.calls == 3 and kinds == ["server_error", "rate_limited"]


async def test_spent_retries_raise_and_count_against_the_breaker() -> None:
    llm = ScriptedLLM(*[LlmUnavailableError("timeout", kind="timeout")] * 3)
    kinds: list[str] = []
    backend = ResilientBackend(
        llm, attempts=2, backoff_base_s=0.001, breaker=CircuitBreaker(1, 60), on_error=kinds.append
    )
    with pytest.raises(LlmUnavailableError):
        await backend.complete([])
    assert llm.calls == 2 and backend.breaker.open
    with pytest.raises(LlmUnavailableError) as skipped:
        await backend.complete([])
    assert skipped.value.kind == "circuit_open" and llm.calls == 2  # the open circuit did not call the LLM
    assert kinds == ["timeout", "timeout", "circuit_open"]


async def test_rejections_are_not_retried_and_unavailability_falls_back() -> None:
    rejected = ScriptedLLM(LlmRejectedError("400"))
    with pytest.raises(LlmRejectedError):
        await ResilientBackend(rejected, attempts=3, backoff_base_s=0.001).complete([])
    assert rejected.calls == 1
    down = ScriptedLLM(*[LlmUnavailableError("503", kind="server_error")] * 5)
    fallback = ScriptedLLM(model="fallback")
    kinds: list[str] = []
    backend = ResilientBackend(down, attempts=2, backoff_base_s=0.001, fallback=fallback, on_error=kinds.append)
    assert (await backend.complete([])).model == "fallback"
    assert kinds == ["server_error", "server_error", "fallback"]


def test_circuit_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert not breaker.allow() and breaker.open
    now[0] = 10.5
    assert breaker.allow()  # one trial call
    assert not breaker.allow()  # and only one
    breaker.succeeded()
    assert breaker.allow() and not breaker.open


def test_a_rate_limited_backend_is_skipped_only_as_long_as_its_retry_after_asks() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=30, clock=lambda: now[0])
    breaker.failed(retry_after_s=2.0)
    breaker.failed(retry_after_s=2.0)  # a 429 storm: open, but for 2 s, not 30
    assert not breaker.allow() and breaker.open
    now[0] = 2.1
    assert breaker.allow() and not breaker.allow()  # one trial call after the Retry-After
    breaker.failed(retry_after_s=2.0)  # still storming
    now[0] = 3.0
    assert not breaker.allow()
    now[0] = 4.2
    assert breaker.allow()
    breaker.succeeded()  # the storm is over
    assert breaker.allow() and not breaker.open
    breaker.failed(retry_after_s=60.0)
    breaker.failed(retry_after_s=60.0)  # a Retry-After longer than the cooldown: the cooldown
    now[0] = 4.2 + 30.1
    assert breaker.allow()
    breaker.failed()  # no Retry-After (a timeout): the whole cooldown
    now[0] = 4.2 + 30.1 + 29.0
    assert not breaker.allow()


def test_the_deadline_cuts_each_attempt_to_the_time_left_and_refuses_attempts_it_cannot_fit() -> None:
    now = [100.0]
    deadline = AnswerDeadline(10, clock=lambda: now[0])
    assert deadline.left() == 10
    assert deadline.attempt_timeout(60) == 10  # LLM_TIMEOUT_S 60 > what is left
    assert deadline.attempt_timeout(4) == 4 and deadline.attempt_timeout(None) == 10
    now[0] = 107.0
    assert deadline.attempt_timeout(60) == pytest.approx(3) and deadline.attempt_timeout(2) == 2
    assert deadline.allows_attempt_after(3 - MIN_ATTEMPT_S)  # a backoff that still leaves a usable attempt
    assert not deadline.allows_attempt_after(3 - MIN_ATTEMPT_S + 0.01)
    now[0] = 111.0  # past it
    assert deadline.left() == 0 and deadline.attempt_timeout(60) == 0 and not deadline.allows_attempt_after(0)
    assert AnswerDeadline(math.inf).attempt_timeout(None) == math.inf  # no deadline, no per-attempt limit


class HangingLLM:
    """An upstream that accepts every call and never answers; counts the calls it saw abandoned."""

    model = "hung"

    def __init__(self) -> None:
        self.calls = 0
        self.abandoned = 0

    async def complete(
        self, messages: list[Message], tools: Tools = None, tool_choice: ToolChoice | None = None
    ) -> Completion:
        self.calls += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        raise AssertionError("unreachable")


async def test_a_hung_llm_gets_attempts_cut_to_the_deadline_and_no_fallback_past_it() -> None:
    hung, fallback = HangingLLM(), ScriptedLLM(model="fallback")
    kinds: list[str] = []
    backend = ResilientBackend(
        hung,
        attempts=3,
        backoff_base_s=0.01,
        backoff_max_s=0.01,
        fallback=fallback,
        on_error=kinds.append,
        attempt_timeout_s=0.3,
        deadline_s=1.0,
    )
    started = time.monotonic()
    with pytest.raises(LlmUnavailableError) as gave_up:
        await backend.complete([])
    took = time.monotonic() - started
    assert gave_up.value.kind == "timeout" and 0.55 <= took < 1.0
    # 0–0.3 s, ~0.31–0.61 s; then less than MIN_ATTEMPT_S is left: no third attempt, no fallback.
    assert (hung.calls, hung.abandoned, fallback.calls) == (2, 2, 0)
    assert kinds == ["timeout", "timeout", "deadline"]


async def test_a_retry_after_longer_than_the_time_left_ends_the_answer_at_once() -> None:
    llm = ScriptedLLM(LlmUnavailableError("429", retry_after_s=20, kind="rate_limited"))
    backend = ResilientBackend(llm, attempts=3, backoff_base_s=0.001, deadline_s=5)
    started = time.monotonic()
    with pytest.raises(LlmUnavailableError):
        await backend.complete([])
    assert llm.calls == 1 and time.monotonic() - started < 1.0  # not 20 s of waiting for a retry


async def test_the_fallback_gets_the_time_the_primary_left() -> None:
    down = ScriptedLLM(*[LlmUnavailableError("503", kind="server_error")] * 3)
    backend = ResilientBackend(down, attempts=3, backoff_base_s=0.001, fallback=ScriptedLLM(model="fb"), deadline_s=5)
    deadline = AnswerDeadline(5)
    assert (await backend.complete([], deadline)).model == "fb"
    assert deadline.left() > 4  # failing fast left the time to the fallback


def _voice(status: str | None) -> ev.MessageReceived:
    message = ev.MessageReceived(kind=ev.MESSAGE_KIND_VOICE, text="[voice]")
    if status is not None:
        message.attributes[ASR_STATUS] = status
    return message


@pytest.mark.parametrize(
    ("message", "readable", "notice"),
    [
        (ev.MessageReceived(kind=ev.MESSAGE_KIND_TEXT, text="hi"), True, NON_TEXT_NOTICE),
        (_voice(ASR_OK), True, NON_TEXT_NOTICE),  # the transcript is the text
        (_voice("corrupt"), False, VOICE_NOTICE),
        (_voice("timeout"), False, VOICE_NOTICE),
        (_voice(None), False, NON_TEXT_NOTICE),  # voice in switched off: the text-only notice
        (ev.MessageReceived(kind=ev.MESSAGE_KIND_IMAGE, text="[image]"), False, NON_TEXT_NOTICE),
    ],
)
def test_a_transcribed_voice_is_read_like_text_and_a_failed_one_gets_the_voice_notice(
    message: ev.MessageReceived, readable: bool, notice: str
) -> None:
    assert is_readable(message) is readable
    if not readable:
        assert non_text_notice(message) == notice
