"""Retries, a circuit breaker and a fallback around any ChatBackend.

Retries: exponential backoff with full jitter on 429, 5xx, timeouts and network errors, waiting
at least what `Retry-After` asks (tenacity). Breaker: after `threshold` consecutive failed calls
the backend is skipped for `cooldown_s` (calls fail at once, so users get the apology quickly
instead of waiting for timeouts), then one trial call decides. Fallback: another backend (model
or endpoint) tried when the first one is unavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from wxbot_nlp.llm import ChatBackend, Completion, LlmRejectedError, LlmUnavailableError

MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is not waited out in full
MAX_BACKOFF_S = MAX_RETRY_AFTER_S  # the longest wait between two attempts


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    def allow(self) -> bool:
        """False while open; after the cooldown one call is let through (half-open)."""
        if self._threshold <= 0 or self._failures < self._threshold:
            return True
        if self._clock() >= self._open_until:
            self._open_until = self._clock() + self._cooldown_s  # one trial per cooldown
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self) -> None:
        self._failures += 1
        if self._failures == self._threshold:
            self._open_until = self._clock() + self._cooldown_s

    @property
    def open(self) -> bool:
        return self._threshold > 0 and self._failures >= self._threshold


def _ignore(_: str) -> None:
    return None


class ResilientBackend:
    """A ChatBackend that retries, breaks and falls back; `on_error(kind)` hears of every failed
    attempt (`timeout`, `rate_limited`, `server_error`, …) and of each switch to the fallback."""

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
    ) -> None:
        self._primary = primary
        self._attempts = max(1, attempts)
        self._wait = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self.breaker = breaker or CircuitBreaker(0, 0)
        self._fallback = fallback
        self._on_error = on_error

    @property
    def model(self) -> str:
        return self._primary.model

    def _wait_for(self, state: RetryCallState) -> float:
        jittered = float(self._wait(state))
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after_s", None)
        return max(jittered, min(float(asked), MAX_RETRY_AFTER_S)) if asked is not None else jittered

    async def _attempt(self, backend: ChatBackend, messages: list[dict[str, str]]) -> Completion:
        try:
            return await backend.complete(messages)
        except (LlmUnavailableError, LlmRejectedError) as exc:
            self._on_error(exc.kind)
            raise

    async def _primary_with_retries(self, messages: list[dict[str, str]]) -> Completion:
        if not self.breaker.allow():
            self._on_error("circuit_open")
            raise LlmUnavailableError(
                "circuit open: the LLM failed repeatedly, skipping it for a while", kind="circuit_open"
            )
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=self._wait_for,
                retry=retry_if_exception_type(LlmUnavailableError),
                reraise=True,
            ):
                with attempt:
                    completion = await self._attempt(self._primary, messages)
        except LlmUnavailableError:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return completion

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        try:
            return await self._primary_with_retries(messages)
        except LlmUnavailableError:
            if self._fallback is None:
                raise
            self._on_error("fallback")
            return await self._attempt(self._fallback, messages)
