"""A tokenizer-free token estimate that is fair to Chinese.

No tokenizer files can be downloaded at run time, so the estimate is: one token per CJK
character (GPT-style BPEs spend 1–2 per Han character), one per four other characters, plus
four per message for the chat framing. It errs on the generous side for Latin text.
"""

from __future__ import annotations

import re

MESSAGE_OVERHEAD = 4

# One token each: CJK ideographs (+ext A), compatibility ideographs, CJK punctuation, full-width
# forms, kana, hangul, emoji and beyond. A regex counts them in C: a character loop in Python cost
# more than the rest of a GetHistory for a long conversation.
_WIDE = re.compile(
    "[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef\u3040-\u30ff\uac00-\ud7af\U0001f000-\U0010ffff]"
)


def estimate_tokens(text: str) -> int:
    wide = len(_WIDE.findall(text))
    narrow = len(text) - wide
    return MESSAGE_OVERHEAD + wide + (narrow + 3) // 4
