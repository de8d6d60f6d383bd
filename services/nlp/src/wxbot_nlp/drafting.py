"""What to answer, decided without I/O: commands, prompt assembly, fixed notices."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from wxbot_common.media.asr import ASR_OK, ASR_STATUS
from wxbot_common.media.vision import image_failed
from wxbot_nlp.kb import KbMatch
from wxbot_nlp.llm import Message
from wxbot_proto.events.v1 import events_pb2 as ev

NO_LLM_NOTICE = (
    "wxbot 已收到您的消息，但尚未配置大语言模型（LLM），暂时无法回答。"
    "管理员可设置 LLM_BASE_URL、LLM_API_KEY 和 LLM_MODEL 后重启。\n"
    "(No LLM is configured yet: set LLM_BASE_URL, LLM_API_KEY and LLM_MODEL to enable answers.)"
)
APOLOGY = "抱歉，我暂时无法回答，请稍后再试。(Sorry, I can't answer right now; please try again later.)"
RESET_DONE = "好的，我已清除我们之前的对话记忆。(Done: I have forgotten our conversation so far.)"
NON_TEXT_NOTICE = "目前我只能阅读文字消息，请用文字描述您的问题。(I can only read text messages for now.)"
VOICE_NOTICE = "抱歉，这条语音没能识别，请再说一次或改用文字。(Sorry, I could not make out that voice message.)"
IMAGE_NOTICE = (
    "抱歉，这张图片没能读取（可发送 JPG、PNG、GIF、WebP 或 HEIC），请重新发送或改用文字描述。"
    "(Sorry, I could not read that image.)"
)
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


NO_LLM_HINT = "（提示：管理员设置 LLM_BASE_URL、LLM_API_KEY、LLM_MODEL 后，我就能回答更多问题。）"
GROUNDING_INTRO = "A knowledge-base entry that may answer the user's question (prefer it when relevant):\n"


class Route(enum.Enum):
    RESET = "reset"
    HELP = "help"
    NON_TEXT = "non_text"
    KNOWLEDGE = "knowledge"
    LLM = "llm"
    NO_LLM = "no_llm"


@dataclass(frozen=True)
class Plan:
    route: Route
    text: str = ""  # the answer, for every route but LLM
    grounding: str = ""  # for LLM: a knowledge-base answer to ground the model with


def is_readable(message: ev.MessageReceived) -> bool:
    """Text, or a voice message the channel transcribed (its transcript is the text)."""
    if message.kind in (ev.MESSAGE_KIND_TEXT, ev.MESSAGE_KIND_UNSPECIFIED):
        return True
    return message.kind == ev.MESSAGE_KIND_VOICE and message.attributes.get(ASR_STATUS) == ASR_OK


def non_text_notice(message: ev.MessageReceived) -> str:
    """A voice message that could not be transcribed, an image that could not be read, get their own
    notice (one, never an apology too)."""
    if message.kind == ev.MESSAGE_KIND_VOICE and message.attributes.get(ASR_STATUS, ASR_OK) != ASR_OK:
        return VOICE_NOTICE
    if image_failed(message):
        return IMAGE_NOTICE
    return NON_TEXT_NOTICE


def plan_answer(
    text: str, is_text: bool, kb: KbMatch | None, llm_available: bool, min_score: float, direct_score: float
) -> Plan:
    """How to answer one accepted message (pure): commands, then media, then the knowledge base
    (alone without an LLM, or directly above `direct_score`), then the LLM grounded by the best
    knowledge-base entry above `min_score`, else the no-LLM notice."""
    command = command_of(text)
    if command is Command.RESET:
        return Plan(Route.RESET, RESET_DONE)
    if command is Command.HELP:
        return Plan(Route.HELP, HELP_TEXT)
    if not is_text:
        return Plan(Route.NON_TEXT, NON_TEXT_NOTICE)
    usable = kb if kb is not None and kb.confidence >= min_score else None
    if usable is not None and (not llm_available or usable.confidence >= direct_score):
        hint = "" if llm_available or "LLM_BASE_URL" in usable.answer else "\n" + NO_LLM_HINT
        return Plan(Route.KNOWLEDGE, usable.answer + hint)
    if llm_available:
        return Plan(Route.LLM, grounding=usable.answer if usable is not None else "")
    return Plan(Route.NO_LLM, NO_LLM_NOTICE)


def build_messages(
    system_prompt: str, history: Iterable[HistoryTurn], user_text: str, grounding: str = ""
) -> list[Message]:
    system = system_prompt + (f"\n\n{GROUNDING_INTRO}{grounding}" if grounding else "")
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.extend({"role": t.role, "content": t.text} for t in history)
    messages.append({"role": "user", "content": user_text})
    return messages
