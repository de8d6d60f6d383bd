"""The model and the skills, in rounds: offer the live tools, run the calls it asks for (in
parallel), give it the results, ask again — until it answers in text.

Bounded three ways, so the user always gets exactly one answer: at most `max_rounds` rounds of
calls (the round after them offers the tools with `tool_choice: none`, so the model must answer
with what it has); each call waits at most `call_timeout_s` and never more than half the answer's
time left (the other half is the model's, to answer from an error result); and every model call
shares the answer's `AnswerDeadline`. A failed, slow or refused call is a `tool` message saying
so, never an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wxbot_common.skill_contract import CallContext
from wxbot_nlp.llm import Completion, Message, ToolCall
from wxbot_nlp.resilience import AnswerDeadline, ResilientBackend
from wxbot_nlp.skills.calls import SkillCaller
from wxbot_nlp.skills.registry import SkillRegistry
from wxbot_nlp.skills.results import ToolResult
from wxbot_proto.events.v1 import events_pb2 as ev


class LocalTool(Protocol):
    """A tool nlp runs itself (e.g. `draw_image`): its result, and media to send with the answer."""

    name: str

    def definition(self) -> dict[str, Any]: ...

    async def call(self, arguments: str, timeout_s: float) -> tuple[ToolResult, list[ev.MediaRef]]: ...


@dataclass(frozen=True)
class Answered:
    completion: Completion  # the final one, with the tokens of every round added up
    tool_calls: int  # how many calls were made (an answer built from live data is not cached)
    media: list[ev.MediaRef] = field(default_factory=list)  # made by local tools: sent with the answer


class ToolLoop:
    def __init__(
        self,
        registry: SkillRegistry,
        caller: SkillCaller,
        max_rounds: int,
        call_timeout_s: float,
        local: Sequence[LocalTool] = (),
    ) -> None:
        self._registry = registry
        self._caller = caller
        self._max_rounds = max_rounds
        self._call_timeout_s = call_timeout_s
        self._local = {t.name: t for t in local}  # a local tool wins over a skill of the same name

    async def _call(
        self, call: ToolCall, timeout_s: float, caller: CallContext | None
    ) -> tuple[ToolResult, list[ev.MediaRef]]:
        local = self._local.get(call.name)
        if local is not None:  # its own deadline (an image takes longer than a skill), within the answer's
            return await local.call(call.arguments, timeout_s)
        return await self._caller.call(call.name, call.arguments, timeout_s, call.id, caller), []

    async def complete(
        self,
        backend: ResilientBackend,
        messages: list[Message],
        deadline: AnswerDeadline,
        caller: CallContext | None = None,
    ) -> Answered:
        """The model's answer; raises what `backend.complete` raises (the caller apologises).
        `caller`: whose message it answers, told to every skill called."""
        local = [t.definition() for t in self._local.values()]
        tools = [*local, *(d for d in self._registry.definitions() if d["function"]["name"] not in self._local)]
        if not tools:
            return Answered(await backend.complete(messages, deadline), 0)
        messages = list(messages)
        prompt_tokens = completion_tokens = calls_made = 0
        media: list[ev.MediaRef] = []
        for round_no in range(self._max_rounds + 1):
            last = round_no == self._max_rounds
            done = await backend.complete(messages, deadline, tools, "none" if last else "auto")
            prompt_tokens += done.prompt_tokens
            completion_tokens += done.completion_tokens
            if not done.tool_calls or last:
                break
            calls = [
                c if c.id else ToolCall(f"call_{round_no}_{i}", c.name, c.arguments)
                for i, c in enumerate(done.tool_calls)
            ]
            messages.append(
                {"role": "assistant", "content": done.text or None, "tool_calls": [c.to_message() for c in calls]}
            )
            timeout_s = min(self._call_timeout_s, deadline.left() / 2)
            local_s = deadline.left() / 2
            results = await asyncio.gather(
                *(self._call(c, local_s if c.name in self._local else timeout_s, caller) for c in calls)
            )
            for call, (result, made) in zip(calls, results, strict=True):
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
                media.extend(made)
            calls_made += len(calls)
        return Answered(Completion(done.text, done.model, prompt_tokens, completion_tokens), calls_made, media)
