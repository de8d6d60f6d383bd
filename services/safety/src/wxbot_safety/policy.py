"""The safety decisions, as pure functions of the event and the facts gathered for it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.injection import InjectionDetector
from wxbot_safety.lexicon import Lexicon

RATE_NOTICE = "您发送消息太频繁了，请稍后再试。(You are sending messages too fast; please try again in a minute.)"
DAY_NOTICE = (
    "您今天的消息数量已达上限，请明天再试。(You have reached today's message limit; please try again tomorrow.)"
)
WORD_NOTICE = "抱歉，您的消息包含不允许的内容，无法处理。(Sorry, your message contains content that is not allowed.)"
INJECTION_NOTICE = "抱歉，这个请求我无法处理。(Sorry, I can't help with that request.)"
UNAVAILABLE_NOTICE = "服务繁忙，请稍后再试。(The service is busy; please try again shortly.)"
OUTPUT_NOTICE = (
    "抱歉，这个回答包含不适合发送的内容，已被拦截。(Sorry, the answer contained content that cannot be sent.)"
)

InjectionAction = Literal["flag", "block"]
OutputAction = Literal["mask", "notice"]


@dataclass(frozen=True)
class Limits:
    per_minute: int = 20  # 0 = unlimited
    per_day: int = 500  # 0 = unlimited


@dataclass(frozen=True)
class RateFacts:
    """The user's message counts in the current windows, this message included; None = unknown."""

    minute: int | None
    day: int | None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    notice: str = ""
    flags: list[str] = field(default_factory=list)


def rate_verdict(rate: RateFacts, limits: Limits) -> Verdict | None:
    """A block when over a limit. Only the first rejected message of a window gets a notice, so a
    flooding user is told once rather than once per message."""
    if limits.per_minute > 0 and rate.minute is not None and rate.minute > limits.per_minute:
        return Verdict(False, "rate_limited_minute", RATE_NOTICE if rate.minute == limits.per_minute + 1 else "")
    if limits.per_day > 0 and rate.day is not None and rate.day > limits.per_day:
        return Verdict(False, "rate_limited_day", DAY_NOTICE if rate.day == limits.per_day + 1 else "")
    return None


def check_inbound(
    text: str,
    rate: RateFacts,
    limits: Limits,
    lexicon: Lexicon,
    detector: InjectionDetector,
    injection_action: InjectionAction = "flag",
    blocked_user: bool = False,
) -> Verdict:
    """Blocked users first (told nothing), then rate (cheapest to explain), then content."""
    if blocked_user:
        return Verdict(False, "blocked_user", "")
    over = rate_verdict(rate, limits)
    if over is not None:
        return over
    if lexicon.find(text):
        return Verdict(False, "sensitive_word", WORD_NOTICE)
    suspicions = detector.detect(text)
    if suspicions and injection_action == "block":
        return Verdict(False, "prompt_injection", INJECTION_NOTICE, suspicions)
    return Verdict(True, flags=[f"prompt_injection_suspected:{name}" for name in suspicions])


def unavailable_verdict() -> Verdict:
    """Fail-closed answer when the rate counters cannot be read."""
    return Verdict(False, "rate_unavailable", UNAVAILABLE_NOTICE)


@dataclass(frozen=True)
class OutboundVerdict:
    text: str
    masked: bool
    blocked: bool = False
    notice: str = ""


def check_outbound(text: str, lexicon: Lexicon, action: OutputAction = "mask") -> OutboundVerdict:
    """A listed term in a drafted reply is masked in place (the user still gets an answer) or, if
    the operator prefers, the whole reply is replaced by a notice."""
    masked, count = lexicon.mask(text)
    if count and action == "notice":
        return OutboundVerdict(text="", masked=False, blocked=True, notice=OUTPUT_NOTICE)
    return OutboundVerdict(masked, count > 0)


def approved_media(media: Iterable[ev.MediaRef], text_masked: bool, lexicon: Lexicon) -> list[ev.MediaRef] | None:
    """The media a reply may carry, copied from the draft: None (block the reply) when an image's
    prompt (`caption`) holds a listed term — the model drew it, so the picture is not sent; the
    voice parts are dropped when the text was masked (they speak the unmasked words)."""
    kept: list[ev.MediaRef] = []
    for ref in media:
        if ref.caption and lexicon.find(ref.caption):
            return None
        if text_masked and ref.content_type.startswith("audio/"):
            continue
        kept.append(ref)
    return kept
