"""JSON from outside (AI-bot payloads, bridge frames): every way it can be wrong is one ValueError.

`json.loads` raises RecursionError, not ValueError, past ~1000 levels of nesting; it guesses
UTF-16/32 for bytes; and it turns `"\\ud800"` escapes into lone surrogates, which protobuf,
hashing and logs cannot encode. Each would otherwise crash a handler that only expects bad JSON.
"""

from __future__ import annotations

import json


class UntrustedJsonError(ValueError):
    pass


def load(raw: str | bytes) -> object:
    """Parse UTF-8 JSON; `UntrustedJsonError` for anything else (bad bytes, syntax, nesting, 5000-digit numbers)."""
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UntrustedJsonError("not UTF-8 JSON") from exc


def encodable(text: str) -> bool:
    """False for text holding lone surrogates (it has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
