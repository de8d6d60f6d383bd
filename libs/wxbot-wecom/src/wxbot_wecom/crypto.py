"""WXBizMsgCrypt-compatible callback crypto (protocol §1): AES-256-CBC, iv = key[:16], PKCS#7 over 32-byte blocks.

Plaintext = random16 ‖ uint32_be(len(msg)) ‖ msg ‖ receive_id. Decryption validates every step strictly
(Tencent's samples do not), so a forged or corrupted body is a typed error rather than garbage.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxbot_wecom.errors import DecryptError, MessageFormatError, ReceiveIdError, SignatureError
from wxbot_wecom.messages import build_envelope_xml, build_reply_envelope_xml, parse_reply_envelope
from wxbot_wecom.signature import msg_signature, verify_msg_signature

__all__ = ["MAX_ENCRYPT_CHARS", "CallbackCrypto", "decode_aes_key"]

BLOCK = 32
"""WeCom's PKCS#7 block size (not AES's 16)."""
MAX_ENCRYPT_CHARS = 4 << 20
"""Upper bound on the base64 ciphertext we are willing to decrypt."""

_RANDOM_LEN = 16
_HEADER_LEN = _RANDOM_LEN + 4
_KEY_CHARS = 43
_B64_STRICT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_KEY_ALPHABET = re.compile(r"[A-Za-z0-9+/]{43}")


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """EncodingAESKey (43 chars) → 32-byte AES key; lenient about the 43rd char's leftover bits (§1.2)."""
    key = encoding_aes_key.strip()
    if len(key) == _KEY_CHARS + 1 and key.endswith("="):
        key = key[:-1]
    if not _KEY_ALPHABET.fullmatch(key):
        raise ValueError("EncodingAESKey must be 43 characters of the standard base64 alphabet")
    raw = base64.b64decode(key + "=")
    if len(raw) != 32:  # pragma: no cover - 43 valid chars always decode to 32 bytes
        raise ValueError("EncodingAESKey does not decode to 32 bytes")
    return raw


def _b64decode_strict(text: str) -> bytes:
    """Standard alphabet, canonical padding, length a multiple of 4; no whitespace or URL-safe characters."""
    if len(text) > MAX_ENCRYPT_CHARS:
        raise DecryptError("ciphertext too long", code="bad_length")
    if not text or len(text) % 4 or not _B64_STRICT.fullmatch(text):
        raise DecryptError("ciphertext is not strict base64", code="bad_base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex already rules these out
        raise DecryptError("ciphertext is not strict base64", code="bad_base64") from exc


def _random16(random16: bytes | None) -> bytes:
    if random16 is None:
        return os.urandom(_RANDOM_LEN)
    if len(random16) != _RANDOM_LEN:
        raise ValueError("random16 must be exactly 16 bytes")
    return random16


@dataclass(frozen=True)
class CallbackCrypto:
    """One callback receiver's secrets. `receive_id`: CorpID (app), AppID (OA safe mode), "" (AI bot)."""

    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    receive_id: str = ""
    _aes_cbc: Cipher[modes.CBC] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("token must not be empty")
        key = decode_aes_key(self.encoding_aes_key)
        # The IV is the key's first 16 bytes for every message: one Cipher, a context per call
        # (building the Cipher runs cryptography's type checks, ~10 us, on every callback otherwise).
        object.__setattr__(self, "_aes_cbc", Cipher(algorithms.AES(key), modes.CBC(key[:16])))

    def _cipher(self) -> Cipher[modes.CBC]:
        return self._aes_cbc

    # -- core ----------------------------------------------------------------------------------------------------

    def encrypt(self, msg: bytes, random16: bytes | None = None) -> str:
        """Encrypt `msg` (inner XML/JSON bytes) for this receiver; `random16` pins the prefix for vectors."""
        if len(msg) >= 1 << 32:
            raise ValueError("message too long")
        body = _random16(random16) + len(msg).to_bytes(4, "big") + msg + self.receive_id.encode("utf-8")
        pad = BLOCK - len(body) % BLOCK
        encryptor = self._cipher().encryptor()
        ciphertext = encryptor.update(body + bytes([pad]) * pad) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypt_b64: str) -> bytes:
        """Decrypt and validate (§1.5): strict base64, block length, exact padding, msg_len bound, receive id."""
        raw = _b64decode_strict(encrypt_b64)
        if len(raw) < BLOCK or len(raw) % 16:
            raise DecryptError(f"ciphertext length {len(raw)} is not a positive multiple of 16", code="bad_length")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise DecryptError("invalid PKCS#7 padding", code="bad_padding")
        body = plain[:-pad]
        if len(body) < _HEADER_LEN:
            raise DecryptError("plaintext shorter than its header", code="bad_msg_len")
        msg_len = int.from_bytes(body[_RANDOM_LEN:_HEADER_LEN], "big")
        end = _HEADER_LEN + msg_len
        if end > len(body):
            raise DecryptError("msg_len exceeds the plaintext", code="bad_msg_len")
        if body[end:] != self.receive_id.encode("utf-8"):
            raise ReceiveIdError("receive id does not match this receiver")
        return body[_HEADER_LEN:end]

    # -- AI-bot media ----------------------------------------------------------------------------------------------

    def decrypt_media(self, data: bytes) -> bytes:
        """An AI-bot media file (the bytes behind an `image.url`): the whole file AES-256-CBC encrypted
        with this receiver's key (iv = key[:16]) and PKCS#7-padded to 32 bytes, without the message
        framing (no random prefix, length or receive id)."""
        if not data or len(data) % 16:
            raise DecryptError(f"media length {len(data)} is not a positive multiple of 16", code="bad_length")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise DecryptError("invalid PKCS#7 padding", code="bad_padding")
        return plain[:-pad]

    def encrypt_media(self, data: bytes) -> bytes:
        """The inverse of `decrypt_media` (what WeCom serves; for fakes and tests)."""
        pad = BLOCK - len(data) % BLOCK
        encryptor = self._cipher().encryptor()
        return encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """The `msg_signature` for `encrypt` under this receiver's token."""
        return msg_signature(self.token, timestamp, nonce, encrypt)

    # -- server side (gateway) -----------------------------------------------------------------------------------

    def verify_and_decrypt(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> bytes:
        """Signature first (cheap, and no decryption oracle for unsigned input), then `decrypt`."""
        verify_msg_signature(msg_signature, self.token, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """GET URL check: return the bare decrypted echostr to send back as text/plain (§2.1).

        A `+` that reached us unencoded was form-decoded to a space; retry with it restored.
        """
        try:
            verify_msg_signature(msg_signature, self.token, timestamp, nonce, echostr)
        except SignatureError:
            if " " not in echostr:
                raise
            echostr = echostr.replace(" ", "+")
            verify_msg_signature(msg_signature, self.token, timestamp, nonce, echostr)
        try:
            return self.decrypt(echostr).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageFormatError("echostr is not UTF-8", code="bad_encoding") from exc

    def encrypt_reply_xml(self, reply_xml: str, timestamp: str, nonce: str, random16: bytes | None = None) -> str:
        """Encrypted passive-reply body `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`."""
        encrypt = self.encrypt(reply_xml.encode("utf-8"), random16)
        return build_reply_envelope_xml(encrypt, self.sign(timestamp, nonce, encrypt), timestamp, nonce)

    def encrypt_reply_json(self, reply_json: str, timestamp: str, nonce: str, random16: bytes | None = None) -> str:
        """AI-bot encrypted reply `{"encrypt","msgsignature","timestamp","nonce"}` (nonce from the callback URL)."""
        encrypt = self.encrypt(reply_json.encode("utf-8"), random16)
        body = {
            "encrypt": encrypt,
            "msgsignature": self.sign(timestamp, nonce, encrypt),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return json.dumps(body, separators=(",", ":"))

    # -- client side (fakes, tests, bench) -----------------------------------------------------------------------

    def build_callback(
        self,
        inner_xml: str,
        timestamp: str,
        nonce: str,
        to_user_name: str,
        agent_id: int | str | None,
        *,
        random16: bytes | None = None,
    ) -> tuple[dict[str, str], str]:
        """A POST callback as WeCom sends it: (query params, envelope XML). `agent_id=None` → OA safe mode."""
        encrypt = self.encrypt(inner_xml.encode("utf-8"), random16)
        query = {"msg_signature": self.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
        return query, build_envelope_xml(to_user_name, encrypt, agent_id)

    def build_json_callback(
        self, inner_json: str, timestamp: str, nonce: str, *, random16: bytes | None = None
    ) -> tuple[dict[str, str], str]:
        """An AI-bot POST callback: (query params, `{"encrypt": …}` body)."""
        encrypt = self.encrypt(inner_json.encode("utf-8"), random16)
        query = {"msg_signature": self.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
        return query, json.dumps({"encrypt": encrypt}, separators=(",", ":"))

    def build_url_verification(
        self, echo: str, timestamp: str, nonce: str, *, random16: bytes | None = None
    ) -> dict[str, str]:
        """Query params of the GET URL check (unencoded; the HTTP client URL-encodes them)."""
        echostr = self.encrypt(echo.encode("utf-8"), random16)
        return {
            "msg_signature": self.sign(timestamp, nonce, echostr),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }

    def open_reply_xml(self, body: bytes | str) -> bytes:
        """Verify and decrypt an encrypted passive reply (what WeCom does with the gateway's answer)."""
        env = parse_reply_envelope(body)
        return self.verify_and_decrypt(env.msg_signature, env.timestamp, env.nonce, env.encrypt)

    def open_reply_json(self, body: bytes | str) -> bytes:
        """Verify and decrypt an AI-bot encrypted JSON reply."""
        try:
            obj: object = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise MessageFormatError("malformed JSON", code="malformed_json") from exc
        if not isinstance(obj, dict) or not all(
            isinstance(obj.get(k), str | int) for k in ("encrypt", "msgsignature", "timestamp", "nonce")
        ):
            raise MessageFormatError("reply JSON lacks encrypt/msgsignature/timestamp/nonce", code="missing_field")
        return self.verify_and_decrypt(
            str(obj["msgsignature"]), str(obj["timestamp"]), str(obj["nonce"]), str(obj["encrypt"])
        )
