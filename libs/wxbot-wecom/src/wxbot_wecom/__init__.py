"""The WeCom / WeChat Official Account wire protocol: signatures, callback crypto, message XML."""

from wxbot_wecom.crypto import CallbackCrypto, decode_aes_key
from wxbot_wecom.errors import DecryptError, MessageFormatError, ReceiveIdError, SignatureError, WeComProtocolError
from wxbot_wecom.messages import (
    Envelope,
    InboundMessage,
    ReplyEnvelope,
    build_inner_event_xml,
    build_inner_text_xml,
    build_text_reply_xml,
    dedup_key,
    parse_envelope,
    parse_inbound,
    parse_json_envelope,
    parse_reply_envelope,
)
from wxbot_wecom.signature import msg_signature, plain_signature, verify_msg_signature, verify_plain_signature

__all__ = [
    "CallbackCrypto",
    "DecryptError",
    "Envelope",
    "InboundMessage",
    "MessageFormatError",
    "ReceiveIdError",
    "ReplyEnvelope",
    "SignatureError",
    "WeComProtocolError",
    "build_inner_event_xml",
    "build_inner_text_xml",
    "build_text_reply_xml",
    "decode_aes_key",
    "dedup_key",
    "msg_signature",
    "parse_envelope",
    "parse_inbound",
    "parse_json_envelope",
    "parse_reply_envelope",
    "plain_signature",
    "verify_msg_signature",
    "verify_plain_signature",
]
