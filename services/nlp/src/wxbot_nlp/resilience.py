"""Retries, a circuit breaker, a fallback and a whole-answer deadline around any ChatBackend.

Retries: exponential backoff with full jitter on 429, 5xx, timeouts and network errors, waiting
at least what `Retry-After` asks (tenacity). Breaker: after `threshold` consecutive failed calls
the backend is skipped for `cooldown_s`, or for the `Retry-After` of the last failure when that is
shorter (calls fail at once, so users get the apology quickly instead of waiting for timeouts),
then one trial call decides. Fallback: another backend (model
or endpoint) tried when the first one is unavailable.

Deadline (`LLM_ANSWER_DEADLINE_S`): every attempt, every wait between attempts and the fallback
share one `AnswerDeadline`. An attempt gets `min(LLM_TIMEOUT_S, time left)`, and is cancelled
when that runs out (the upstream sees the connection close, and its late answer has nobody to
go to); a retry or the fallback is not started when the wait before it would leave less than
`MIN_ATTEMPT_S`. So the caller has an answer or an error within the deadline, never both.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from wxbot_nlp.llm import ChatBackend, Completion, LlmRejectedError, LlmUnavailableError, Message, ToolChoice

Tools = Sequence[dict[str, Any]] | None

MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is not waited out in full
MAX_BACKOFF_S = MAX_RETRY_AFTER_S  # the longest wait between two attempts
MIN_ATTEMPT_S = 0.5  # a retry or fallback that would have less time than this is not started


class AnswerDeadline:
    """The moment by which one answer must be settled, shared by all its attempts and waits."""

    def __init__(self, within_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ends_at = clock() + within_s

    def left(self) -> float:
        """Seconds until the deadline (0 once it has passed; infinite without one)."""
        return max(0.0, self._ends_at - self._clock())

    def attempt_timeout(self, per_attempt_s: float | None) -> float:
        """How long the next attempt may take: its own timeout, cut to the time left."""
        return min(math.inf if per_attempt_s is None else per_attempt_s, self.left())

    def allows_attempt_after(self, wait_s: float) -> bool:
        """Whether an attempt started after waiting `wait_s` would still have `MIN_ATTEMPT_S`."""
        return self.left() - wait_s >= MIN_ATTEMPT_S


class CircuitBreaker:
    """Skips a failing backend for a while: `cooldown_s` after the threshold of failed calls, or
    only as long as the backend asked (`Retry-After` of its last failure, when shorter).

    A 429 storm is a backend shedding load for a stated time, not one that is down: honouring its
    Retry-After, the circuit lets a trial call through seconds after the storm ends instead of
    apologising for the whole cooldown (found by `make chaos`: a 10 s storm cost 30 s of apologies).
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._pause_s = cooldown_s  # how long the circuit stays open after the latest failure

    def allow(self) -> bool:
        """False while open; after the pause one call is let through (half-open)."""
        if self._threshold <= 0 or self._failures < self._threshold:
            return True
        if self._clock() >= self._open_until:
            self._open_until = self._clock() + self._pause_s  # one trial per pause
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self, retry_after_s: float | None = None) -> None:
        self._failures += 1
        self._pause_s = self._cooldown_s if retry_after_s is None else min(self._cooldown_s, retry_after_s)
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._pause_s

    @property
    def open(self) -> bool:
        return self._threshold > 0 and self._failures >= self._threshold


class _StopAtDeadline(stop_base):
    """Stop retrying when the wait before the next attempt would leave it too little time."""

    def __init__(self, deadline: AnswerDeadline) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self._deadline.allows_attempt_after(retry_state.upcoming_sleep)


def _ignore(_: str) -> None:
    return None


class ResilientBackend:
    """A ChatBackend that retries, breaks, falls back and keeps a deadline; `on_error(kind)` hears
    of every failed attempt (`timeout`, `rate_limited`, `server_error`, …), of each switch to the
    fallback, and of an answer the deadline ended (`deadline`)."""

    def __init__(
        self,
        primary: ChatBackend,
        *,
        attempts: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        breaker: CircuitBreaker | None = None,
        fallback: ChatBackend | None = None,
        on_error: Callable[[str], None] = _ignore,
        attempt_timeout_s: float | None = None,
        deadline_s: float = math.inf,
    ) -> None:
        """`attempt_timeout_s`: one attempt's limit (LLM_TIMEOUT_S); `deadline_s`: the whole
        answer's (LLM_ANSWER_DEADLINE_S), used when `complete` is not given a deadline."""
        self._primary = primary
        self._attempts = max(1, attempts)
        self._wait = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self.breaker = breaker or CircuitBreaker(0, 0)
        self._fallback = fallback
        self._on_error = on_error
        self._attempt_timeout_s = attempt_timeout_s
        self._deadline_s = deadline_s

    @property
    def model(self) -> str:
        return self._primary.model

    def _wait_for(self, state: RetryCallState) -> float:
        jittered = float(self._wait(state))
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after_s", None)
        return max(jittered, min(float(asked), MAX_RETRY_AFTER_S)) if asked is not None else jittered

    async def _attempt(
        self,
        backend: ChatBackend,
        messages: list[Message],
        deadline: AnswerDeadline,
        tools: Tools = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion:
        timeout_s = deadline.attempt_timeout(self._attempt_timeout_s)
        try:
            async with asyncio.timeout(None if math.isinf(timeout_s) else timeout_s):
                return await backend.complete(messages, tools, tool_choice)
        except TimeoutError as exc:  # ours: the attempt was cancelled, its connection closed
            self._on_error("timeout")
            raise LlmUnavailableError(f"no answer within {timeout_s:.3g} s", kind="timeout") from exc
        except (LlmUnavailableError, LlmRejectedError) as exc:
            self._on_error(exc.kind)
            raise

    async def _primary_with_retries(
        self, messages: list[Message], deadline: AnswerDeadline, tools: Tools, tool_choice: ToolChoice | None
    ) -> Completion:
        if not self.breaker.allow():
            self._on_error("circuit_open")
            raise LlmUnavailableError(
                "circuit open: the LLM failed repeatedly, skipping it for a while", kind="circuit_open"
            )

        try:
            try:  # most answers take one attempt: the retry machinery only once it failed
                completion = await self._attempt(self._primary, messages, deadline, tools, tool_choice)
            except LlmUnavailableError as first:
                completion = await self._retries(first, messages, deadline, tools, tool_choice)
        except LlmUnavailableError as exc:
            self.breaker.failed(exc.retry_after_s)
            raise
        self.breaker.succeeded()
        return completion

    async def _retries(
        self,
        first: LlmUnavailableError,
        messages: list[Message],
        deadline: AnswerDeadline,
        tools: Tools,
        tool_choice: ToolChoice | None,
    ) -> Completion:
        """Attempts after a failed first one: tenacity is told of the first failure as its own first
        attempt, so its waits, stops and attempt numbers are those of one loop from the start."""
        failed: LlmUnavailableError | None = first
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts) | _StopAtDeadline(deadline),
            wait=self._wait_for,
            retry=retry_if_exception_type(LlmUnavailableError),
            reraise=True,
        ):
            with attempt:
                if failed is not None:
                    replayed, failed = failed, None
                    raise replayed
                return await self._attempt(self._primary, messages, deadline, tools, tool_choice)
        raise AssertionError("tenacity ends with an answer or the last error")  # pragma: no cover

    async def complete(
        self,
        messages: list[Message],
        deadline: AnswerDeadline | None = None,
        tools: Tools = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion:
        """The answer (or the model's tool calls, when offered `tools`), or LlmUnavailableError /
        LlmRejectedError, within `deadline` (default: a new one of `deadline_s` from now)."""
        deadline = deadline or AnswerDeadline(self._deadline_s)
        if deadline.left() <= 0:
            self._on_error("deadline")
            raise LlmUnavailableError("the answer's deadline passed before the LLM was asked", kind="timeout")
        try:
            return await self._primary_with_retries(messages, deadline, tools, tool_choice)
        except LlmUnavailableError:
            if not deadline.allows_attempt_after(0.0):
                self._on_error("deadline")
                raise
            if self._fallback is None:
                raise
            self._on_error("fallback")
            return await self._attempt(self._fallback, messages, deadline, tools, tool_choice)
