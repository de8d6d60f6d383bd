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
from dataclasses import dataclass

from wxbot_common.skill_contract import CallContext
from wxbot_nlp.llm import Completion, Message, ToolCall
from wxbot_nlp.resilience import AnswerDeadline, ResilientBackend
from wxbot_nlp.skills.calls import SkillCaller
from wxbot_nlp.skills.registry import SkillRegistry


@dataclass(frozen=True)
class Answered:
    completion: Completion  # the final one, with the tokens of every round added up
    tool_calls: int  # how many calls were made (an answer built from live data is not cached)


class ToolLoop:
    def __init__(self, registry: SkillRegistry, caller: SkillCaller, max_rounds: int, call_timeout_s: float) -> None:
        self._registry = registry
        self._caller = caller
        self._max_rounds = max_rounds
        self._call_timeout_s = call_timeout_s

    async def complete(
        self,
        backend: ResilientBackend,
        messages: list[Message],
        deadline: AnswerDeadline,
        caller: CallContext | None = None,
    ) -> Answered:
        """The model's answer; raises what `backend.complete` raises (the caller apologises).
        `caller`: whose message it answers, told to every skill called."""
        tools = self._registry.definitions()
        if not tools:
            return Answered(await backend.complete(messages, deadline), 0)
        messages = list(messages)
        prompt_tokens = completion_tokens = calls_made = 0
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
            results = await asyncio.gather(
                *(self._caller.call(c.name, c.arguments, timeout_s, c.id, caller) for c in calls)
            )
            for call, result in zip(calls, results, strict=True):
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
            calls_made += len(calls)
        return Answered(Completion(done.text, done.model, prompt_tokens, completion_tokens), calls_made)
