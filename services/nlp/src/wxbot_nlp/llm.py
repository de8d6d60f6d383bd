"""What the nlp stage needs from a language model, whoever serves it.

A vendor is one `ChatBackend` implementation (see `openai_compatible.py`); resilience (retries,
circuit breaker, fallback) wraps any backend (`resilience.py`). Failures carry a `kind` so the
errors metric says what went wrong, not just that something did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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


Message = dict[str, Any]  # one chat message: {"role", "content"} plus `tool_calls` / `tool_call_id`
ToolChoice = Literal["auto", "none"]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks for; `arguments` is the model's JSON text, unchecked."""

    id: str
    name: str
    arguments: str

    def to_message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()


class ChatBackend(Protocol):
    @property
    def model(self) -> str: ...

    async def complete(
        self,
        messages: list[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion: ...
