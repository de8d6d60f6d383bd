"""Whether a message asks for a picture, and what to draw (pure, no I/O).

Precise on purpose — a false positive costs an image generation and answers a question with a
picture — so only these count, after an optional polite opening (请 / 帮我 / 给我 / 麻烦 /
please / can you):

- `/draw <prompt>` (also `/画`): the whole rest is the prompt; `/draw` alone gets the usage notice;
- 画 + a measure word or 一下: 画一只猫, 帮我画个太阳, 画张海边的图, 画一下长城 (prompt: what follows 画);
- 生成 / 做 / 来 + (一)张 / 幅 / 个 + … + 图 / 图片 / 图像 / 插画 / 照片: 生成一张猫的图片 (prompt: the request);
- draw / paint / sketch + (me) + a / an / the / some / my: "draw me a cat" (prompt: what follows);
- generate / create / make + (me) + an image / a picture / a drawing / an illustration + of: prompt after "of".

Never a question (a message ending in ? or ？: "画一只猫难吗？"), never 画 without a measure word
(画家, 画画, 油画 are words, not requests), and the prompt must be 1–1000 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DRAW_COMMANDS = ("/draw", "/画")
MAX_PROMPT_CHARS = 1000

DRAW_USAGE = "用法：/draw 描述，例如 /draw 一只戴帽子的猫。(Usage: /draw <what to draw>, e.g. /draw a cat in a hat.)"
DRAW_APOLOGY = (
    "抱歉，图片暂时没能生成，请稍后再试。(Sorry, I could not create the image right now; please try again later.)"
)
DRAW_TOO_LARGE = "抱歉，生成的图片太大，无法发送。(Sorry, the generated image is too large to send.)"

_POLITE = r"(?:请你?|帮我|帮忙|给我|麻烦你?|能不能|可以|please\s+|can\s+you\s+|could\s+you\s+)*"
_ZH_DRAW = re.compile(
    rf"^{_POLITE}\s*画(?P<prompt>(?:一下|一|个|张|幅|只|头|条|朵|棵|座|位|群|片|幅|出)\S.*)$", re.DOTALL
)
_ZH_MAKE = re.compile(
    rf"^{_POLITE}\s*(?:生成|做|来|创作|设计)(?:一)?[张幅个副].+(?:图|图片|图像|插画|照片|画)[。！!]?$", re.DOTALL
)
_EN_DRAW = re.compile(
    rf"^{_POLITE}(?:draw|paint|sketch)\s+(?:me\s+|us\s+)?(?P<prompt>(?:a|an|the|some|my|two|three)\s+.+)$",
    re.DOTALL | re.IGNORECASE,
)
_EN_MAKE = re.compile(
    rf"^{_POLITE}(?:generate|create|make)\s+(?:me\s+|us\s+)?(?:an?\s+)?"
    r"(?:image|picture|drawing|illustration|painting|photo)\s+of\s+(?P<prompt>.+)$",
    re.DOTALL | re.IGNORECASE,
)


@dataclass(frozen=True)
class DrawRequest:
    prompt: str  # "" for `/draw` without a prompt: answer with the usage


def drawing_request(text: str) -> DrawRequest | None:
    """The drawing `text` asks for, or None when it does not ask for one."""
    stripped = text.strip()
    lowered = stripped.lower()
    for command in DRAW_COMMANDS:
        if lowered == command or lowered.startswith(command + " ") or lowered.startswith(command + "\n"):
            return DrawRequest(_bounded(stripped[len(command) :]))
    if not stripped or stripped.endswith(("?", "？")):
        return None
    if (m := _ZH_DRAW.match(stripped)) is not None:
        prompt = m["prompt"].removeprefix("一下").removeprefix("出")
        return _request(prompt or stripped)
    if _ZH_MAKE.match(stripped) is not None:
        return _request(stripped)
    if (m := _EN_DRAW.match(stripped) or _EN_MAKE.match(stripped)) is not None:
        return _request(m["prompt"])
    return None


def _bounded(prompt: str) -> str:
    return prompt.strip()[:MAX_PROMPT_CHARS]


def _request(prompt: str) -> DrawRequest | None:
    bounded = _bounded(prompt.rstrip("。.!！"))
    return DrawRequest(bounded) if bounded else None
