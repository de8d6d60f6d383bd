"""The safety decisions, as pure functions of the event and the facts gathered for it."""

from __future__ import annotations

from dataclasses import dataclass

from wxbot_safety.lexicon import Lexicon

RATE_NOTICE = "您发送消息太频繁了，请稍后再试。(You are sending messages too fast; please try again in a minute.)"
WORD_NOTICE = "抱歉，您的消息包含不允许的内容，无法处理。(Sorry, your message contains content that is not allowed.)"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    notice: str = ""


def check_inbound(text: str, count_this_minute: int, per_minute: int, lexicon: Lexicon) -> Verdict:
    """Rate first (cheapest to explain), then content.

    Over the limit, only the first rejected message of the window gets a notice, so a flooding
    user is told once rather than once per message.
    """
    if per_minute > 0 and count_this_minute > per_minute:
        notice = RATE_NOTICE if count_this_minute == per_minute + 1 else ""
        return Verdict(False, "rate_limited", notice)
    if lexicon.find(text):
        return Verdict(False, "sensitive_word", WORD_NOTICE)
    return Verdict(True)


@dataclass(frozen=True)
class OutboundVerdict:
    text: str
    masked: bool


def check_outbound(text: str, lexicon: Lexicon) -> OutboundVerdict:
    """Drafted replies are masked in place rather than dropped: the user still gets an answer."""
    masked, count = lexicon.mask(text)
    return OutboundVerdict(masked, count > 0)
