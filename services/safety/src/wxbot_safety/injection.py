"""Prompt-injection heuristics: cheap patterns for the common attempts, in English and Chinese.

They cannot catch everything (no heuristic can); they make attempts visible — flagged on the
accepted event and counted — and, where an operator wants it, blocked.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Heuristic:
    name: str
    pattern: re.Pattern[str]


def default_heuristics() -> list[Heuristic]:
    def h(name: str, *alternatives: str) -> Heuristic:
        return Heuristic(name, re.compile("|".join(alternatives), re.IGNORECASE))

    return [
        h(
            "ignore_instructions",
            r"\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|your)\b.{0,20}"
            r"\b(instructions?|rules?|prompts?|directions?|guidelines?)\b",
            r"(忽略|无视|忘记|忘掉|不要理会).{0,12}(之前|以上|上面|前面|所有|先前)?.{0,6}(指令|指示|规则|提示词?|设定|要求)",
        ),
        h(
            "system_prompt_request",
            r"\b(reveal|show|print|repeat|tell me|output|what is|what's)\b.{0,30}"
            r"\b(system|initial|hidden|original)\s+(prompt|instructions?|message)\b",
            r"(系统提示词?|系统指令|初始指令|隐藏的?指令|你的提示词|system\s*prompt)",
        ),
        h(
            "roleplay_jailbreak",
            r"\b(DAN|do anything now|developer mode|jailbreak|jailbroken)\b",
            r"\byou are (now )?(no longer|not) (bound|restricted|an? (ai|assistant))\b",
            r"\bpretend (that )?you (are|have) no (rules|restrictions|filters|guidelines)\b",
            r"(开发者模式|越狱|你现在(不再|没有)(受|任何)?(限制|约束|规则)|扮演.{0,10}没有(任何)?(限制|规则|道德))",
        ),
    ]


class InjectionDetector:
    def __init__(self, heuristics: list[Heuristic] | None = None) -> None:
        self._heuristics = heuristics if heuristics is not None else default_heuristics()

    def detect(self, text: str) -> list[str]:
        """Names of the heuristics that `text` triggers (empty: nothing suspicious)."""
        folded = unicodedata.normalize("NFKC", text)
        return [h.name for h in self._heuristics if h.pattern.search(folded)]
