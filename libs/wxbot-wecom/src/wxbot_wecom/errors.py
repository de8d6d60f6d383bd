"""Protocol errors: one hierarchy so the gateway can map any failure to a 4xx and a metric label."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DecryptError",
    "MessageFormatError",
    "ReceiveIdError",
    "SignatureError",
    "WeComProtocolError",
]


class WeComProtocolError(Exception):
    """Base class; `code` is a short, stable, low-cardinality string for metrics and 4xx reasons."""

    default_code: ClassVar[str] = "protocol_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code: str = code or self.default_code


class SignatureError(WeComProtocolError):
    """`msg_signature` / `signature` does not match: the request did not come from WeCom (or wrong token)."""

    default_code = "bad_signature"


class DecryptError(WeComProtocolError):
    """The ciphertext is not a valid envelope: codes `bad_base64`, `bad_length`, `bad_padding`, `bad_msg_len`."""

    default_code = "decrypt_failed"


class ReceiveIdError(WeComProtocolError):
    """Decrypted fine but addressed to another CorpID/AppID (or a non-empty id for the AI bot)."""

    default_code = "bad_receive_id"


class MessageFormatError(WeComProtocolError):
    """Malformed or hostile XML/JSON: codes `empty`, `too_large`, `bad_encoding`, `malformed_xml`,
    `forbidden_xml` (DTD/entities), `malformed_json`, `missing_field`, `bad_field`."""

    default_code = "malformed_message"
