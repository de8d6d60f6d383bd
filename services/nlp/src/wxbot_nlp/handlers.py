"""The drafting stage: one ReplyDrafted for every accepted message (or a reset + confirmation)."""

from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxbot_common.errors import PermanentError, TransientError
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_nlp.drafting import (
    APOLOGY,
    HELP_TEXT,
    NO_LLM_NOTICE,
    NON_TEXT_NOTICE,
    RESET_DONE,
    Command,
    HistoryTurn,
    build_messages,
    command_of,
)
from wxbot_nlp.llm import ChatBackend, Completion, LlmRejectedError, LlmUnavailableError
from wxbot_proto.context.v1 import context_pb2 as ctx
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc
from wxbot_proto.events.v1 import events_pb2 as ev

_ROLE = {ctx.ROLE_USER: "user", ctx.ROLE_ASSISTANT: "assistant"}


class NlpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.llm_latency = Histogram(
            "wxbot_nlp_llm_seconds",
            "Latency of LLM calls",
            ["model", "outcome"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=registry,
        )
        self.tokens = Counter("wxbot_nlp_llm_tokens", "Tokens used", ["model", "direction"], registry=registry)
        self.replies = Counter("wxbot_nlp_replies", "Drafted replies by source", ["source"], registry=registry)
        self.errors = Counter("wxbot_nlp_errors", "Failures by kind", ["kind"], registry=registry)


class Drafter:
    def __init__(
        self,
        publisher: EventPublisher,
        context: ctx_grpc.ContextServiceAsyncStub,
        backend: ChatBackend | None,
        system_prompt: str,
        history_budget: int,
        context_timeout_s: float,
        max_deliver: int,
        metrics: NlpMetrics,
    ) -> None:
        self._publisher = publisher
        self._context = context
        self._backend = backend
        self._system_prompt = system_prompt
        self._history_budget = history_budget
        self._context_timeout_s = context_timeout_s
        self._max_deliver = max_deliver
        self._metrics = metrics
        self._log = get_logger("wxbot.nlp")

    async def handle(self, delivery: Delivery) -> None:
        accepted = delivery.event
        assert isinstance(accepted, ev.InboundAccepted)
        text = accepted.message.text
        command = command_of(text)
        if command is Command.RESET:
            await self._publish_reset(accepted)
            await self._draft(accepted, RESET_DONE, ev.REPLY_SOURCE_COMMAND)
        elif command is Command.HELP:
            await self._draft(accepted, HELP_TEXT, ev.REPLY_SOURCE_COMMAND)
        elif accepted.message.kind not in (ev.MESSAGE_KIND_TEXT, ev.MESSAGE_KIND_UNSPECIFIED):
            await self._draft(accepted, NON_TEXT_NOTICE, ev.REPLY_SOURCE_NOTICE)
        elif self._backend is None:
            await self._draft(accepted, NO_LLM_NOTICE, ev.REPLY_SOURCE_NOTICE)
        else:
            await self._answer(accepted, self._backend, delivery.num_delivered)

    async def _answer(self, accepted: ev.InboundAccepted, backend: ChatBackend, delivered: int) -> None:
        history = await self._history(accepted)
        messages = build_messages(self._system_prompt, history, accepted.message.text)
        started = time.perf_counter()
        try:
            completion = await backend.complete(messages)
        except LlmUnavailableError as exc:
            self._metrics.errors.labels("llm_unavailable").inc()
            self._metrics.llm_latency.labels("", "error").observe(time.perf_counter() - started)
            if delivered < self._max_deliver - 1:
                raise TransientError(f"LLM unavailable: {exc}") from exc
            self._log.error("llm_gave_up", error=str(exc), delivered=delivered)
            await self._draft(accepted, APOLOGY, ev.REPLY_SOURCE_NOTICE)
            return
        except LlmRejectedError as exc:
            self._metrics.errors.labels("llm_rejected").inc()
            self._log.error("llm_rejected", error=str(exc))
            await self._draft(accepted, APOLOGY, ev.REPLY_SOURCE_NOTICE)
            return
        self._record(completion, time.perf_counter() - started)
        await self._draft(accepted, completion.text or APOLOGY, ev.REPLY_SOURCE_LLM, completion)

    async def _history(self, accepted: ev.InboundAccepted) -> list[HistoryTurn]:
        request = ctx.GetHistoryRequest(
            conversation_id=accepted.meta.conversation_id,
            token_budget=self._history_budget,
            min_sequence=accepted.meta.origin_sequence,
        )
        try:
            response = await self._context.GetHistory(request, timeout=self._context_timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._metrics.errors.labels("context_unavailable").inc()
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise PermanentError(f"context rejected the request: {exc.details()}") from exc
            raise TransientError(f"context unavailable: {exc.code().name}", delay_s=1.0) from exc
        if not response.complete:
            self._log.warning("history_incomplete", origin=accepted.meta.origin_sequence)
        return [HistoryTurn(_ROLE[t.role], t.text) for t in response.turns if t.role in _ROLE]

    def _record(self, completion: Completion, elapsed_s: float) -> None:
        self._metrics.llm_latency.labels(completion.model, "ok").observe(elapsed_s)
        self._metrics.tokens.labels(completion.model, "in").inc(completion.prompt_tokens)
        self._metrics.tokens.labels(completion.model, "out").inc(completion.completion_tokens)

    async def _publish_reset(self, accepted: ev.InboundAccepted) -> None:
        reset = ev.ConversationReset()
        derive_meta(reset.meta, accepted.meta, "nlp", "reset")
        await self._publisher.publish(reset)

    async def _draft(
        self,
        accepted: ev.InboundAccepted,
        text: str,
        source: ev.ReplySource.ValueType,
        completion: Completion | None = None,
    ) -> None:
        drafted = ev.ReplyDrafted(reply_to=accepted.message.reply_to, text=text, source=source)
        if completion is not None:
            drafted.model = completion.model
            drafted.prompt_tokens = completion.prompt_tokens
            drafted.completion_tokens = completion.completion_tokens
        derive_meta(drafted.meta, accepted.meta, "nlp", "drafted")
        await self._publisher.publish(drafted)
        self._metrics.replies.labels(ev.ReplySource.Name(source).removeprefix("REPLY_SOURCE_").lower()).inc()
