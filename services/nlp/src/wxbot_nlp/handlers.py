"""The drafting stage: one ReplyDrafted for every accepted message (or a reset + confirmation).

The decision (command, knowledge base, LLM, notice) is the pure `plan_answer`; this module gathers
its inputs (history from context, the user's A/B variant, the cache) and publishes the result.
Whatever fails, the user gets exactly one reply: the answer, or one apology. Context trouble is
retried by redelivery; on the last allowed delivery the question is answered without history
rather than dead-lettered, because silence is the one outcome a user must never get.

Once the history is known, the answer has `LLM_ANSWER_DEADLINE_S`: waiting for a concurrent
asker of the same question, every LLM attempt and the fallback share it (`AnswerDeadline`), so
the user gets the answer or the apology within it. The answer and the apology are the same event
(one id, derived from the message's): JetStream drops a second one within its duplicate window,
and a redelivered message whose reply is already in the log — an nlp replica that stopped after
publishing, before acknowledging — is acknowledged without asking the LLM again, however late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wxbot_common.errors import TransientError
from wxbot_common.ids import derived_event_id, user_hash
from wxbot_common.logs import get_logger
from wxbot_common.media.vision import has_image
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EventKind
from wxbot_common.rpc import traced_call
from wxbot_common.skill_contract import CallContext
from wxbot_nlp.answer_cache import AnswerCache, Claim
from wxbot_nlp.drafting import (
    APOLOGY,
    IMAGE_NOTICE,
    HistoryTurn,
    Plan,
    Route,
    build_messages,
    command_of,
    is_readable,
    non_text_notice,
    plan_answer,
)
from wxbot_nlp.drawing import DRAW_APOLOGY, DRAW_TOO_LARGE, DRAW_USAGE, drawing_request
from wxbot_nlp.history_batch import BatchedHistory
from wxbot_nlp.kb import KnowledgeBase
from wxbot_nlp.llm import Completion, LlmRejectedError, LlmUnavailableError
from wxbot_nlp.media_out import MediaOut
from wxbot_nlp.resilience import AnswerDeadline, ResilientBackend
from wxbot_nlp.skills.commands import SkillCommands
from wxbot_nlp.tool_loop import ToolLoop
from wxbot_nlp.variants import Variant, assign
from wxbot_nlp.vision import Vision, VisionError, VisionTurn
from wxbot_proto.context.v1 import context_pb2 as ctx
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc
from wxbot_proto.events.v1 import events_pb2 as ev

GET_HISTORY = "/wxbot.context.v1.ContextService/GetHistory"
_ROLE = {ctx.ROLE_USER: "user", ctx.ROLE_ASSISTANT: "assistant"}
_SOURCE = {
    Route.RESET: ev.REPLY_SOURCE_COMMAND,
    Route.HELP: ev.REPLY_SOURCE_COMMAND,
    Route.NON_TEXT: ev.REPLY_SOURCE_NOTICE,
    Route.NO_LLM: ev.REPLY_SOURCE_NOTICE,
    Route.KNOWLEDGE: ev.REPLY_SOURCE_KNOWLEDGE_BASE,
}
# Answers that are also spoken under VOICE_REPLY (not notices and apologies: a TTS endpoint down
# with the LLM would only delay them).
_SPOKEN = frozenset(
    {ev.REPLY_SOURCE_LLM, ev.REPLY_SOURCE_CACHE, ev.REPLY_SOURCE_KNOWLEDGE_BASE, ev.REPLY_SOURCE_COMMAND}
)


class NlpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.llm_latency = Histogram(
            "wxbot_nlp_llm_seconds",
            "Latency of LLM calls (retries included), by model, outcome and A/B variant",
            ["model", "outcome", "variant"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=registry,
        )
        self.tokens = Counter(
            "wxbot_nlp_llm_tokens", "Tokens used", ["model", "direction", "variant"], registry=registry
        )
        self.replies = Counter(
            "wxbot_nlp_replies",
            "Drafted replies by source (llm, cache, knowledge_base, command, skill_command, notice, apology), variant",
            ["source", "variant"],
            registry=registry,
        )
        self.errors = Counter(
            "wxbot_nlp_errors",
            "Failures by kind: every failed LLM attempt (timeout, rate_limited, server_error, network, malformed, "
            "rejected, circuit_open), fallback, deadline (an answer given up at LLM_ANSWER_DEADLINE_S), "
            "context_unavailable, context_skipped",
            ["kind", "variant"],
            registry=registry,
        )
        self.cache = Counter(
            "wxbot_nlp_answer_cache",
            "Answer cache lookups by result (hit, joined: answered by a concurrent identical question, miss)",
            ["result", "variant"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "wxbot_nlp_llm_circuit_open",
            "1 while the variant's LLM circuit is open (calls skip the LLM: fallback or apology)",
            ["variant"],
            registry=registry,
        )


@dataclass(frozen=True)
class DraftingPolicy:
    history_budget: int
    context_timeout_s: float
    kb_min_score: float
    kb_direct_score: float
    max_deliver: int  # the consumer's; on this delivery context trouble no longer delays the answer
    answer_deadline_s: float  # LLM_ANSWER_DEADLINE_S: from the known history to the answer or apology


@dataclass(frozen=True)
class History:
    turns: list[HistoryTurn]
    known: bool  # False: context could not be asked, the answer goes without it (and is not cached)
    image_possible: bool = True  # False: no image this question could be about (`may_have_image`)


async def image_and_cached(
    vision: Vision | None, cache: AnswerCache | None, accepted: ev.InboundAccepted, scope: str
) -> tuple[VisionTurn | None, str | Claim | None]:
    """The recent image a question is about, and with `cache` (a standalone question) the cached
    answer, the caller's claim to ask the LLM, or None (another caller is asking it).

    Two independent round trips, asked together: one wait instead of two before the LLM call. A
    standalone question almost never follows an image (the image would have left turns in the
    history), so a claim taken for a question that turns out to be about one is rarely given back.
    """
    question = accepted.message.text
    if vision is None:
        return None, await cache.get_or_claim(scope, question) if cache is not None else None
    if cache is None:
        return await vision.for_follow_up(accepted), None
    turn, found = await asyncio.gather(
        vision.for_follow_up(accepted), cache.get_or_claim(scope, question), return_exceptions=True
    )
    if turn is not None and isinstance(found, Claim):
        # Asked with the image instead, or not at all (the lookup failed): those waiting on the
        # question must not wait for an answer this caller will never store.
        await cache.release(found)
        found = None
    if isinstance(turn, BaseException):
        raise turn
    if isinstance(found, BaseException):
        raise found
    return turn, found


class Drafter:
    def __init__(
        self,
        publisher: EventPublisher,
        context: BatchedHistory | ctx_grpc.ContextServiceAsyncStub,
        backends: Mapping[str, ResilientBackend] | None,
        variants: list[Variant],
        knowledge: KnowledgeBase,
        cache: AnswerCache | None,
        policy: DraftingPolicy,
        metrics: NlpMetrics,
        tool_loop: ToolLoop | None = None,
        commands: SkillCommands | None = None,
        vision: Vision | None = None,
        media: MediaOut | None = None,
    ) -> None:
        self._publisher = publisher
        self._context = context
        self._backends = backends
        self._variants = variants
        self._kb = knowledge
        self._cache = cache
        self._policy = policy
        self._metrics = metrics
        self._tool_loop = tool_loop
        self._commands = commands
        self._vision = vision
        self._media = media or MediaOut()
        self._log = get_logger("wxbot.nlp")
        self._tracer = trace.get_tracer("wxbot.nlp")

    def swap_knowledge(self, knowledge: KnowledgeBase) -> None:
        """Answer from `knowledge` from now on (the files were edited: see kb_source)."""
        self._kb = knowledge

    async def handle(self, delivery: Delivery) -> None:
        accepted = delivery.event
        assert isinstance(accepted, ev.InboundAccepted)
        if delivery.num_delivered > 1 and await self._publisher.was_published(
            EventKind.DRAFTED,
            accepted.meta.conversation_id,
            derived_event_id("nlp", accepted.meta.event_id, "drafted"),
            after_sequence=delivery.stream_sequence,
        ):
            self._log.info("already_answered", seq=delivery.stream_sequence, delivered=delivery.num_delivered)
            return
        message = accepted.message
        is_text = is_readable(message)
        address = message.reply_to
        variant = assign(self._variants, user_hash(f"{accepted.meta.channel}:{address.corp_id}:{address.user_id}"))
        if self._vision is not None and self._backends is not None and has_image(message):
            await self._answer_image(accepted, variant, delivery.num_delivered >= self._policy.max_deliver)
            return
        if is_text and self._media.drawer is not None and (request := drawing_request(message.text)) is not None:
            await self._draw(accepted, request.prompt, variant.name)
            return
        if is_text and self._commands is not None and command_of(message.text) is None:
            reply = await self._commands.run(message.text, CallContext.of(accepted.meta, address))
            if reply is not None:
                await self._draft(accepted, reply, ev.REPLY_SOURCE_COMMAND, variant.name, label="skill_command")
                return
        match = self._kb.search(message.text) if is_text and self._kb.size else None
        plan = plan_answer(
            message.text,
            is_text,
            match,
            self._backends is not None,
            self._policy.kb_min_score,
            self._policy.kb_direct_score,
        )
        if plan.route is Route.RESET:
            await self._publish_reset(accepted)
            if self._vision is not None:
                await self._vision.forget(accepted.meta.conversation_id)
        if plan.route is Route.LLM:
            last_try = delivery.num_delivered >= self._policy.max_deliver
            await self._answer(accepted, plan, variant, last_try)
        elif plan.route is Route.NON_TEXT:
            await self._draft(accepted, non_text_notice(message), _SOURCE[plan.route], variant.name)
        else:
            await self._draft(accepted, plan.text, _SOURCE[plan.route], variant.name)

    async def _answer(self, accepted: ev.InboundAccepted, plan: Plan, variant: Variant, last_try: bool) -> None:
        assert self._backends is not None
        question = accepted.message.text
        history = await self._history(accepted, variant.name, last_try)
        deadline = AnswerDeadline(self._policy.answer_deadline_s)  # history waits for earlier answers
        standalone = history.known and not history.turns and not plan.grounding
        cache = self._cache if standalone else None
        scope = variant.fingerprint
        vision = self._vision if history.image_possible else None  # no claim that cannot succeed
        turn, found = await image_and_cached(vision, cache, accepted, scope)
        if turn is not None:  # a question right after an image is asked with that image (never cached)
            await self._ask_llm(accepted, plan, variant, history.turns, deadline, turn)
            return
        if cache is None:
            await self._ask_llm(accepted, plan, variant, history.turns, deadline)
            return
        if found is None:  # the same question is with the LLM right now: share its answer
            cached, result = await cache.wait_for_answer(scope, question, deadline.left()), "joined"
        elif isinstance(found, str):
            cached, result = found, "hit"
        else:  # ours to ask: store the answer for the others, or release the claim so that they try
            self._metrics.cache.labels("miss", variant.name).inc()
            async with cache.holding(found):
                answer = await self._ask_llm(accepted, plan, variant, history.turns, deadline)
                if answer is not None:
                    await cache.put_and_release(found, answer)
            return
        if cached is None:  # the one we waited for gave up: try ourselves in the time left (uncached)
            self._metrics.cache.labels("miss", variant.name).inc()
            await self._ask_llm(accepted, plan, variant, history.turns, deadline)
            return
        self._metrics.cache.labels(result, variant.name).inc()
        await self._draft(accepted, cached, ev.REPLY_SOURCE_CACHE, variant.name)

    async def _answer_image(self, accepted: ev.InboundAccepted, variant: Variant, last_try: bool) -> None:
        """An image (with or without a caption): the vision model sees it, or the user gets one notice."""
        history = await self._history(accepted, variant.name, last_try)
        deadline = AnswerDeadline(self._policy.answer_deadline_s)
        assert self._vision is not None
        try:
            turn = await self._vision.for_image(accepted)
        except VisionError as exc:
            self._log.warning("image_unreadable", error=str(exc))
            await self._draft(accepted, IMAGE_NOTICE, ev.REPLY_SOURCE_NOTICE, variant.name)
            return
        await self._ask_llm(accepted, Plan(Route.LLM), variant, history.turns, deadline, turn)

    async def _ask_llm(
        self,
        accepted: ev.InboundAccepted,
        plan: Plan,
        variant: Variant,
        history: list[HistoryTurn],
        deadline: AnswerDeadline,
        turn: VisionTurn | None = None,
    ) -> str | None:
        """Publish the LLM's answer, or the apology; return the answer when it may be cached (not
        the apology, an answer about an image, nor one built from tool results: those are live data).
        With `turn`, the user's message is its text and image parts, asked of the vision model."""
        assert self._backends is not None
        messages = build_messages(variant.system_prompt or "", history, accepted.message.text, plan.grounding)
        backend = self._backends[variant.name]
        if turn is not None:
            messages[-1]["content"] = turn.content()
            backend = (self._vision.backend if self._vision is not None else None) or backend
        started = time.perf_counter()
        tool_calls = 0
        made: list[ev.MediaRef] = []  # images the model drew with the draw_image tool
        try:
            if self._tool_loop is None or turn is not None:
                completion = await backend.complete(messages, deadline)
            else:
                caller = CallContext.of(accepted.meta, accepted.message.reply_to)
                answered = await self._tool_loop.complete(backend, messages, deadline, caller)
                completion, tool_calls, made = answered.completion, answered.tool_calls, answered.media
        except (LlmUnavailableError, LlmRejectedError) as exc:
            self._metrics.llm_latency.labels(backend.model, "error", variant.name).observe(
                time.perf_counter() - started
            )
            self._log.error("llm_gave_up", kind=exc.kind, error=str(exc), variant=variant.name)
            await self._draft(accepted, APOLOGY, ev.REPLY_SOURCE_NOTICE, variant.name, label="apology")
            return None
        self._record(completion, time.perf_counter() - started, variant.name)
        if not completion.text and not made:
            self._metrics.errors.labels("empty", variant.name).inc()
            await self._draft(accepted, APOLOGY, ev.REPLY_SOURCE_NOTICE, variant.name, label="apology")
            return None
        await self._draft(accepted, completion.text, ev.REPLY_SOURCE_LLM, variant.name, completion, media=made)
        return completion.text if tool_calls == 0 and turn is None else None

    async def _history(self, accepted: ev.InboundAccepted, variant: str, last_try: bool) -> History:
        request = ctx.GetHistoryRequest(
            conversation_id=accepted.meta.conversation_id,
            token_budget=self._policy.history_budget,
            min_sequence=accepted.meta.origin_sequence,
        )
        try:
            response = await traced_call(
                self._tracer, GET_HISTORY, self._context.GetHistory, request, self._policy.context_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            self._metrics.errors.labels("context_unavailable", variant).inc()
            if last_try or exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self._metrics.errors.labels("context_skipped", variant).inc()
                self._log.error("answering_without_history", code=exc.code().name, details=exc.details())
                return History([], known=False)
            raise TransientError(f"context unavailable: {exc.code().name}", delay_s=1.0) from exc
        if not response.complete:
            self._log.warning("history_incomplete", origin=accepted.meta.origin_sequence)
        image_possible = self._vision is not None and self._vision.may_follow_image(response, accepted)
        turns = [HistoryTurn(_ROLE[t.role], t.text) for t in response.turns if t.role in _ROLE]
        return History(turns, known=True, image_possible=image_possible)

    def _record(self, completion: Completion, elapsed_s: float, variant: str) -> None:
        self._metrics.llm_latency.labels(completion.model, "ok", variant).observe(elapsed_s)
        self._metrics.tokens.labels(completion.model, "in", variant).inc(completion.prompt_tokens)
        self._metrics.tokens.labels(completion.model, "out", variant).inc(completion.completion_tokens)

    async def _publish_reset(self, accepted: ev.InboundAccepted) -> None:
        reset = ev.ConversationReset()
        derive_meta(reset.meta, accepted.meta, "nlp", "reset")
        await self._publisher.publish(reset)

    async def _draw(self, accepted: ev.InboundAccepted, prompt: str, variant: str) -> None:
        """ "画一只猫" or `/draw …` (safety checked the message, so the prompt, before nlp saw it):
        the image alone, or one notice saying why there is none."""
        assert self._media.drawer is not None
        if not prompt:
            await self._draft(accepted, DRAW_USAGE, ev.REPLY_SOURCE_NOTICE, variant, label="draw_usage")
            return
        drawn = await self._media.drawer.draw(prompt)
        if drawn.media is None:
            notice = DRAW_TOO_LARGE if drawn.reason == "too_large" else DRAW_APOLOGY
            await self._draft(accepted, notice, ev.REPLY_SOURCE_NOTICE, variant, label="apology")
            return
        await self._draft(accepted, "", ev.REPLY_SOURCE_COMMAND, variant, label="image", media=[drawn.media])

    async def _draft(
        self,
        accepted: ev.InboundAccepted,
        text: str,
        source: ev.ReplySource.ValueType,
        variant: str,
        completion: Completion | None = None,
        label: str | None = None,
        media: Sequence[ev.MediaRef] = (),
    ) -> None:
        """Publish the reply; its media in order: images first made, then the text spoken (VOICE_REPLY)."""
        drafted = ev.ReplyDrafted(reply_to=accepted.message.reply_to, text=text, source=source, variant=variant)
        drafted.media.extend(media)
        voicer = self._media.voicer
        if voicer is not None and text and source in _SPOKEN and voicer.wanted(accepted.message):
            drafted.media.extend(await voicer.speak(text))
        if completion is not None:
            drafted.model = completion.model
            drafted.prompt_tokens = completion.prompt_tokens
            drafted.completion_tokens = completion.completion_tokens
        derive_meta(drafted.meta, accepted.meta, "nlp", "drafted")
        await self._publisher.publish(drafted)
        source_name = label or ev.ReplySource.Name(source).removeprefix("REPLY_SOURCE_").lower()
        self._metrics.replies.labels(source_name, variant).inc()
