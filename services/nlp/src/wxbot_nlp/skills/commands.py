"""Skill commands: `/weather 北京` calls the skill that declared `command: /weather` directly —
no LLM needed (it works without one), the text after the command as its argument.

The user sees the reply: a JSON string as its text, anything else as the JSON the skill sent; a failed call is one
plain sentence saying what went wrong. Built-in commands (`/reset`, `/help`) always win.
"""

from __future__ import annotations

import json

from wxbot_common.skill_contract import CallContext
from wxbot_nlp.skills.calls import SkillCaller
from wxbot_nlp.skills.registry import SkillRegistry

FAILED = "抱歉，{command} 暂时没有成功：{reason} (Sorry, {command} did not work: {reason})"


class SkillCommands:
    def __init__(self, registry: SkillRegistry, caller: SkillCaller, timeout_s: float) -> None:
        self._registry = registry
        self._caller = caller
        self._timeout_s = timeout_s

    def matches(self, text: str) -> bool:
        return self._registry.command(text) is not None

    async def run(self, text: str, caller: CallContext | None = None) -> str | None:
        """The reply to a skill command, or None when `text` is not one (any more)."""
        found = self._registry.command(text)
        if found is None:
            return None
        tool, rest = found
        arguments = self._caller.arguments_for_command(tool, rest)
        result = await self._caller.call(tool.name, arguments, self._timeout_s, caller=caller)
        command = tool.command or tool.name
        if not result.ok:
            reason = str(json.loads(result.content).get("error", result.error))
            return FAILED.format(command=command, reason=reason)
        return result.content  # a JSON string's text, else the JSON itself; cut to the result budget
