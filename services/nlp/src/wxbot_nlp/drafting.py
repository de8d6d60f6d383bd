"""What to answer, decided without I/O: commands, prompt assembly, fixed notices."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

NO_LLM_NOTICE = (
    "wxbot 已收到您的消息，但尚未配置大语言模型（LLM），暂时无法回答。"
    "管理员可设置 LLM_BASE_URL、LLM_API_KEY 和 LLM_MODEL 后重启。\n"
    "(No LLM is configured yet: set LLM_BASE_URL, LLM_API_KEY and LLM_MODEL to enable answers.)"
)
APOLOGY = "抱歉，我暂时无法回答，请稍后再试。(Sorry, I can't answer right now; please try again later.)"
RESET_DONE = "好的，我已清除我们之前的对话记忆。(Done: I have forgotten our conversation so far.)"
NON_TEXT_NOTICE = "目前我只能阅读文字消息，请用文字描述您的问题。(I can only read text messages for now.)"
HELP_TEXT = (
    "我是 wxbot，企业微信里的智能助手。直接发消息即可提问。\n"
    "命令：/reset 或 清除记忆 —— 清除对话记忆；/help 或 帮助 —— 显示本帮助。\n"
    "(I'm wxbot. Ask me anything. Commands: /reset forgets our conversation, /help shows this.)"
)


class Command(enum.Enum):
    RESET = "reset"
    HELP = "help"


_COMMANDS = {
    "/reset": Command.RESET,
    "清除记忆": Command.RESET,
    "/clear": Command.RESET,
    "/help": Command.HELP,
    "帮助": Command.HELP,
}


def command_of(text: str) -> Command | None:
    return _COMMANDS.get(text.strip().lower())


@dataclass(frozen=True)
class HistoryTurn:
    role: str  # "user" | "assistant"
    text: str


def build_messages(system_prompt: str, history: Iterable[HistoryTurn], user_text: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.extend({"role": t.role, "content": t.text} for t in history)
    messages.append({"role": "user", "content": user_text})
    return messages
