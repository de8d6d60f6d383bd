"""WeCom/OA callback signatures: SHA-1 over the lexicographically sorted values, no separator (protocol §1.3)."""

from __future__ import annotations

import hashlib
import hmac

from wxbot_wecom.errors import SignatureError

__all__ = ["msg_signature", "plain_signature", "verify_msg_signature", "verify_plain_signature"]


def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The 4-value `msg_signature` (WeCom apps, AI bot, OA safe mode); use the raw query strings."""
    return _sha1_sorted(token, timestamp, nonce, encrypt)


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    """The 3-value Official Account `signature` (plain-mode GET/POST)."""
    return _sha1_sorted(token, timestamp, nonce)


def _check(received: str, expected: str) -> None:
    # Encode first: compare_digest refuses non-ASCII str, and the received value is attacker-controlled.
    if not hmac.compare_digest(received.strip().lower().encode("utf-8", "replace"), expected.encode("ascii")):
        raise SignatureError("signature mismatch")


def verify_msg_signature(signature: str, token: str, timestamp: str, nonce: str, encrypt: str) -> None:
    """Raise `SignatureError` unless `signature` is the 4-value signature (constant-time compare)."""
    _check(signature, msg_signature(token, timestamp, nonce, encrypt))


def verify_plain_signature(signature: str, token: str, timestamp: str, nonce: str) -> None:
    """Raise `SignatureError` unless `signature` is the 3-value OA signature (constant-time compare)."""
    _check(signature, plain_signature(token, timestamp, nonce))
