"""What one tool call gave the model, whichever transport made it (NATS or MCP).

A failure is a JSON object `{"error": ..., "tool": ...}` the model reads like any result; a
result longer than the budget is cut, with a note saying how much was left out — the same
shape for every skill, so the model never needs to know where a tool lives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["ok", "error", "timeout"]  # the latency histogram's label of a call that reached a skill


@dataclass(frozen=True)
class ToolResult:
    """What a call gave: `content` for the model (a `tool` message), `error` set when it failed."""

    content: str
    error: str | None = None  # the kind: unknown_tool, invalid_arguments, unavailable, timeout, ...
    value: Any = None  # the decoded reply, when there is one

    @property
    def ok(self) -> bool:
        return self.error is None


def failed(kind: str, message: str, tool: str, **extra: str) -> ToolResult:
    return ToolResult(json.dumps({"error": message, **extra, "tool": tool}, ensure_ascii=False), error=kind)


def cut(text: str, budget: int) -> str:
    """`text`, or its first `budget` characters and a note of how many there were."""
    if len(text) <= budget:
        return text
    return text[:budget] + f"\n[truncated: the result had {len(text)} characters; only the first {budget} are shown]"
