"""A tokenizer-free token estimate that is fair to Chinese.

No tokenizer files can be downloaded at run time, so the estimate is: one token per CJK
character (GPT-style BPEs spend 1–2 per Han character), one per four other characters, plus
four per message for the chat framing. It errs on the generous side for Latin text.
"""

from __future__ import annotations

MESSAGE_OVERHEAD = 4


def _is_wide(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3400 <= code <= 0x9FFF  # CJK unified ideographs (+ext A)
        or 0xF900 <= code <= 0xFAFF
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x3040 <= code <= 0x30FF  # kana
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or code >= 0x1F000  # emoji
    )


def estimate_tokens(text: str) -> int:
    wide = sum(1 for ch in text if _is_wide(ch))
    narrow = len(text) - wide
    return MESSAGE_OVERHEAD + wide + (narrow + 3) // 4
