"""What the nlp stage needs from a language model, whoever serves it.

A vendor is one `ChatBackend` implementation (see `openai_compatible.py`); resilience (retries,
circuit breaker, fallback) wraps any backend (`resilience.py`). Failures carry a `kind` so the
errors metric says what went wrong, not just that something did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

UnavailableKind = Literal["timeout", "rate_limited", "server_error", "network", "malformed", "circuit_open"]


class LlmUnavailableError(Exception):
    """The upstream failed in a way a later attempt may not (timeout, 429, 5xx, network)."""

    def __init__(self, message: str, retry_after_s: float | None = None, kind: UnavailableKind = "network") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.kind: UnavailableKind = kind


class LlmRejectedError(Exception):
    """The upstream refused the request itself (4xx other than 429): retrying will not help."""

    kind = "rejected"


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class ChatBackend(Protocol):
    @property
    def model(self) -> str: ...

    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...
