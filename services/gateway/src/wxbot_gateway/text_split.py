"""Splitting replies for WeCom's 2048-byte text limit without breaking characters or sentences."""

from __future__ import annotations

WECOM_TEXT_LIMIT = 2048
_BREAKS = ("\n\n", "\n", "。", "！", "？", ". ", "! ", "? ", "；", "，", ", ", " ")


def split_utf8(text: str, limit: int = WECOM_TEXT_LIMIT) -> list[str]:
    """Parts of at most `limit` UTF-8 bytes that join back to `text`, cut at the best boundary.

    A cut prefers a paragraph, then a line, then a sentence end, then a space, as long as it keeps
    at least half of the allowed bytes; otherwise it falls back to a character boundary.
    """
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > limit:
        head = rest.encode()[:limit].decode(errors="ignore")  # longest prefix of whole characters
        cut = len(head)
        for sep in _BREAKS:
            at = head.rfind(sep)
            if at > 0 and len(head[: at + len(sep)].encode()) >= limit // 2:
                cut = at + len(sep)
                break
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts
