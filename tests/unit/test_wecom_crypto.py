"""wxbot_wecom signatures and callback crypto against the pinned protocol vectors (a…i) and hostile inputs."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxbot_wecom.crypto import CallbackCrypto, decode_aes_key
from wxbot_wecom.errors import DecryptError, MessageFormatError, ReceiveIdError, SignatureError, WeComProtocolError
from wxbot_wecom.messages import parse_envelope, parse_inbound, parse_json_envelope
from wxbot_wecom.signature import msg_signature, plain_signature, verify_msg_signature, verify_plain_signature

V: dict[str, Any] = json.loads((Path(__file__).parent.parent / "fixtures" / "wecom-vectors.json").read_text("utf-8"))
CFG = V["config"]
TOKEN, KEY, CORP, TS, NONCE = CFG["token"], CFG["encoding_aes_key"], CFG["corpid"], CFG["timestamp"], CFG["nonce"]


def corp_crypto() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, KEY, CORP)


def raw_aes(b64: str, key: str = KEY) -> bytes:
    """Independent no-padding AES-CBC decrypt, to read back prefixes the vectors do not spell out."""
    aes = decode_aes_key(key)
    dec = Cipher(algorithms.AES(aes), modes.CBC(aes[:16])).decryptor()
    return dec.update(base64.b64decode(b64)) + dec.finalize()


def forge(padded_plaintext: bytes) -> str:
    """Encrypt an arbitrary (possibly invalid) padded plaintext with the test key."""
    aes = decode_aes_key(KEY)
    enc = Cipher(algorithms.AES(aes), modes.CBC(aes[:16])).encryptor()
    return base64.b64encode(enc.update(padded_plaintext) + enc.finalize()).decode()


# -- key, signatures -------------------------------------------------------------------------------------------


def test_config_key_and_iv() -> None:
    key = decode_aes_key(KEY)
    assert key.hex() == CFG["aes_key_hex"]
    assert key[:16].hex() == CFG["iv_hex"]


def test_lenient_key_with_leftover_bits() -> None:
    key = V["f_official_tencent_sample"]["encoding_aes_key"]
    assert len(decode_aes_key(key)) == 32
    assert decode_aes_key(key + "=") == decode_aes_key(key)


@pytest.mark.parametrize("bad_key", ["", KEY[:-1], KEY + "A", KEY[:-1] + "-", KEY[:-1] + "_", KEY + "==", "é" * 43])
def test_bad_encoding_aes_key_rejected_at_construction(bad_key: str) -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        CallbackCrypto(TOKEN, bad_key, CORP)


def test_empty_token_and_bad_random_rejected() -> None:
    with pytest.raises(ValueError, match="token"):
        CallbackCrypto("", KEY, CORP)
    with pytest.raises(ValueError, match="16 bytes"):
        corp_crypto().encrypt(b"x", random16=b"short")


def test_repr_hides_secrets() -> None:
    text = repr(corp_crypto())
    assert TOKEN not in text
    assert KEY not in text
    assert CORP in text


def test_signature_is_sha1_of_sorted_values() -> None:
    a = V["a_url_verification"]
    assert "".join(sorted([TOKEN, TS, NONCE, a["echostr"]])) == a["signature_input_sorted_concat"]
    assert msg_signature(TOKEN, TS, NONCE, a["echostr"]) == a["msg_signature"]
    verify_msg_signature(a["msg_signature"], TOKEN, TS, NONCE, a["echostr"])
    verify_msg_signature(a["msg_signature"].upper(), TOKEN, TS, NONCE, a["echostr"])


# -- every vector with a pinned random prefix: encrypt byte-exact, ciphertext hex, decrypt back ---------------------


DETAILED = [
    ("a_url_verification", lambda v: v["echostr"]),
    ("b_inbound_text_message", lambda v: v["encrypt"]),
    ("d_passive_reply", lambda v: v["encrypt"]),
    ("e_full_block_padding", lambda v: v["encrypt"]),
    ("g_aibot_json", lambda v: v["body_json"]["encrypt"]),
]


@pytest.mark.parametrize(("name", "get_encrypt"), DETAILED, ids=[name for name, _ in DETAILED])
def test_vector_detail_roundtrip(name: str, get_encrypt: Any) -> None:
    vec = V[name]
    d = vec["detail"]
    encrypt = get_encrypt(vec)
    padded = bytes.fromhex(d["padded_plaintext_hex"])
    msg = padded[20 : 20 + d["msg_len_bytes"]]
    assert padded[16:20].hex() == d["msg_len_be32_hex"]
    assert padded[-1] == d["pkcs7_pad_byte"]
    crypto = CallbackCrypto(TOKEN, KEY, d["receiveid"])
    assert crypto.encrypt(msg, bytes.fromhex(d["random16_hex"])) == encrypt
    assert base64.b64decode(encrypt).hex() == d["ciphertext_hex"]
    assert raw_aes(encrypt) == padded
    assert crypto.decrypt(encrypt) == msg


# -- a: URL verification ----------------------------------------------------------------------------------------


def test_a_url_verification() -> None:
    a = V["a_url_verification"]
    crypto = corp_crypto()
    assert crypto.verify_url(a["msg_signature"], TS, NONCE, a["echostr"]) == a["expected_response_body"]
    q = dict(urllib.parse.parse_qsl(a["query_string"], strict_parsing=True))
    assert (
        crypto.verify_url(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"]) == a["expected_response_body"]
    )
    params = crypto.build_url_verification(
        a["expected_response_body"], TS, NONCE, random16=bytes.fromhex(a["detail"]["random16_hex"])
    )
    assert params["echostr"] == a["echostr"]
    assert urllib.parse.urlencode(params) == a["query_string"]


def test_a_url_verification_tolerates_unencoded_plus() -> None:
    a = V["a_url_verification"]
    mangled = a["echostr"].replace("+", " ")
    assert corp_crypto().verify_url(a["msg_signature"], TS, NONCE, mangled) == a["expected_response_body"]


def test_a_url_verification_bad_signature() -> None:
    a = V["a_url_verification"]
    with pytest.raises(SignatureError):
        corp_crypto().verify_url(a["msg_signature"], TS, "1", a["echostr"])
    with pytest.raises(SignatureError):
        corp_crypto().verify_url(a["msg_signature"], TS, NONCE, a["echostr"].replace("+", " ") + " ")


# -- b/c: inbound POST ------------------------------------------------------------------------------------------


def test_b_inbound_decrypts_to_c() -> None:
    b, c = V["b_inbound_text_message"], V["c_expected_decrypted"]
    env = parse_envelope(b["body_xml"])
    assert (env.to_user_name, env.agent_id, env.encrypt) == (CORP, CFG["agentid"], b["encrypt"])
    q = b["query"]
    plain = corp_crypto().verify_and_decrypt(q["msg_signature"], q["timestamp"], q["nonce"], env.encrypt)
    assert plain == c["plaintext_xml"].encode("utf-8")
    assert parse_inbound(plain).content == c["fields"]["Content"]


def test_b_build_callback_is_byte_exact() -> None:
    b, c = V["b_inbound_text_message"], V["c_expected_decrypted"]
    query, body = corp_crypto().build_callback(
        c["plaintext_xml"], TS, NONCE, CORP, CFG["agentid"], random16=bytes.fromhex(b["detail"]["random16_hex"])
    )
    assert query == b["query"]
    assert body == b["body_xml"]


# -- d: passive reply -------------------------------------------------------------------------------------------


def test_d_passive_reply_byte_exact() -> None:
    d = V["d_passive_reply"]
    crypto = corp_crypto()
    assert msg_signature(TOKEN, d["timestamp"], d["nonce"], d["encrypt"]) == d["msg_signature"]
    body = crypto.encrypt_reply_xml(
        d["plaintext_xml"], d["timestamp"], d["nonce"], random16=bytes.fromhex(d["detail"]["random16_hex"])
    )
    assert body == d["response_body_xml"]
    assert crypto.open_reply_xml(body) == d["plaintext_xml"].encode("utf-8")
    assert crypto.open_reply_xml(crypto.encrypt_reply_xml("<xml/>", "1", "n")) == b"<xml/>"


# -- e: full padding block --------------------------------------------------------------------------------------


def test_e_full_block_padding() -> None:
    e = V["e_full_block_padding"]
    assert bytes.fromhex(e["detail"]["padded_plaintext_hex"])[-32:] == b"\x20" * 32
    assert msg_signature(TOKEN, TS, NONCE, e["encrypt"]) == e["msg_signature"]
    plain = corp_crypto().verify_and_decrypt(e["msg_signature"], TS, NONCE, e["encrypt"])
    assert plain == e["msg"].encode()


# -- f: Tencent's own sample ------------------------------------------------------------------------------------


def test_f_official_tencent_sample() -> None:
    f = V["f_official_tencent_sample"]
    crypto = CallbackCrypto(f["token"], f["encoding_aes_key"], f["corpid"])
    u = f["verify_url"]
    assert crypto.verify_url(u["msg_signature"], u["timestamp"], u["nonce"], u["echostr"]) == u["expected_plain"]
    m = f["decrypt_msg"]
    plain = crypto.verify_and_decrypt(m["msg_signature"], m["timestamp"], m["nonce"], m["encrypt"])
    assert plain.decode("utf-8") == m["expected_plain"]
    msg = parse_inbound(plain)
    assert (msg.from_user_name, msg.content, msg.msg_id, msg.agent_id) == (
        "ChenJiaShun",
        "你好",
        "1456453720",
        "1000002",
    )


# -- g: AI bot JSON, receive id "" ------------------------------------------------------------------------------


def test_g_aibot_callback() -> None:
    g = V["g_aibot_json"]
    crypto = CallbackCrypto(TOKEN, KEY, g["receiveid"])
    encrypt = parse_json_envelope(json.dumps(g["body_json"]).encode())
    q = g["query"]
    plain = crypto.verify_and_decrypt(q["msg_signature"], q["timestamp"], q["nonce"], encrypt)
    assert plain.decode("utf-8") == g["expected_plain_json"]
    query, body = crypto.build_json_callback(
        g["expected_plain_json"], TS, NONCE, random16=bytes.fromhex(g["detail"]["random16_hex"])
    )
    assert query == q
    assert json.loads(body) == g["body_json"]
    with pytest.raises(ReceiveIdError):
        corp_crypto().decrypt(encrypt)


def test_g_aibot_reply() -> None:
    g = V["g_aibot_json"]
    expected = g["reply_body_json"]
    crypto = CallbackCrypto(TOKEN, KEY, "")
    assert crypto.decrypt(expected["encrypt"]).decode("utf-8") == g["reply_plain_json"]
    random16 = raw_aes(expected["encrypt"])[:16]
    body = crypto.encrypt_reply_json(g["reply_plain_json"], expected["timestamp"], expected["nonce"], random16)
    assert json.loads(body) == expected
    assert crypto.open_reply_json(body) == g["reply_plain_json"].encode("utf-8")


# -- h/i: Official Account ----------------------------------------------------------------------------------------


def test_h_official_account_plain_signature() -> None:
    h = V["h_official_account_plain_get"]
    q = h["query"]
    assert plain_signature(TOKEN, q["timestamp"], q["nonce"]) == q["signature"]
    verify_plain_signature(q["signature"], TOKEN, q["timestamp"], q["nonce"])
    doc = h["doc_example"]
    assert plain_signature(doc["token"], doc["timestamp"], doc["nonce"]) == doc["signature"]
    with pytest.raises(SignatureError):
        verify_plain_signature(q["signature"], TOKEN, q["timestamp"], "0")


def test_i_official_account_safe_mode() -> None:
    i = V["i_official_account_safe_mode_post"]
    q = i["query"]
    crypto = CallbackCrypto(TOKEN, KEY, i["appid"])
    verify_plain_signature(q["signature"], TOKEN, q["timestamp"], q["nonce"])
    env = parse_envelope(i["body_xml"])
    assert (env.to_user_name, env.agent_id) == ("gh_0123456789ab", None)
    plain = crypto.verify_and_decrypt(q["msg_signature"], q["timestamp"], q["nonce"], env.encrypt)
    assert plain.decode("utf-8") == i["expected_plain_xml"]
    query, body = crypto.build_callback(
        i["expected_plain_xml"], TS, NONCE, "gh_0123456789ab", None, random16=raw_aes(env.encrypt)[:16]
    )
    assert body == i["body_xml"]
    assert query["msg_signature"] == q["msg_signature"]
    with pytest.raises(ReceiveIdError):
        corp_crypto().decrypt(env.encrypt)


# -- hostile input ----------------------------------------------------------------------------------------------


B = V["b_inbound_text_message"]
B_RAW = base64.b64decode(B["encrypt"])
B_PADDED = bytes.fromhex(B["detail"]["padded_plaintext_hex"])
RID = CORP.encode()


def _plain(msg: bytes, rid: bytes = RID, *, msg_len: int | None = None) -> bytes:
    body = b"R" * 16 + (len(msg) if msg_len is None else msg_len).to_bytes(4, "big") + msg + rid
    n = 32 - len(body) % 32
    return body + bytes([n]) * n


HOSTILE_CIPHERTEXT: list[tuple[str, str, type[WeComProtocolError], str]] = [
    ("empty", "", DecryptError, "bad_base64"),
    ("garbage chars", "!!!!" + B["encrypt"][4:], DecryptError, "bad_base64"),
    ("url-safe alphabet", B["encrypt"].replace("+", "-").replace("/", "_"), DecryptError, "bad_base64"),
    ("embedded newline", B["encrypt"][:64] + "\n" + B["encrypt"][64:], DecryptError, "bad_base64"),
    ("missing padding", B["encrypt"].rstrip("="), DecryptError, "bad_base64"),
    ("excess padding", B["encrypt"] + "==", DecryptError, "bad_base64"),
    ("interior padding", "QU==" + B["encrypt"], DecryptError, "bad_base64"),
    ("space", B["encrypt"].replace("+", " "), DecryptError, "bad_base64"),
    ("too short", base64.b64encode(B_RAW[:16]).decode(), DecryptError, "bad_length"),
    ("not block multiple", base64.b64encode(B_RAW[:-1]).decode(), DecryptError, "bad_length"),
    ("truncated by a block", base64.b64encode(B_RAW[:-16]).decode(), DecryptError, "bad_padding"),
    ("pad byte 0", forge(B_PADDED[:-1] + b"\x00"), DecryptError, "bad_padding"),
    ("pad byte 33", forge(B_PADDED[:-1] + b"\x21"), DecryptError, "bad_padding"),
    ("pad byte 255", forge(B_PADDED[:-1] + b"\xff"), DecryptError, "bad_padding"),
    ("pad bytes unequal", forge(B_PADDED[:-2] + b"\x05\x06"), DecryptError, "bad_padding"),
    ("msg_len too large", forge(_plain(b"hello", msg_len=10_000)), DecryptError, "bad_msg_len"),
    ("msg_len past receive id", forge(_plain(b"hello", msg_len=5 + len(RID) + 1)), DecryptError, "bad_msg_len"),
    ("body shorter than header", forge(b"R" * 16 + b"\x10" * 16), DecryptError, "bad_msg_len"),
    ("wrong receive id", forge(_plain(b"hello", b"ww0000000000000000")), ReceiveIdError, "bad_receive_id"),
    ("receive id with suffix", forge(_plain(b"hello", RID + b"x")), ReceiveIdError, "bad_receive_id"),
    ("empty receive id", forge(_plain(b"hello", b"")), ReceiveIdError, "bad_receive_id"),
]


@pytest.mark.parametrize(
    ("case", "encrypt", "exc", "code"), HOSTILE_CIPHERTEXT, ids=[case for case, *_ in HOSTILE_CIPHERTEXT]
)
def test_hostile_ciphertext(case: str, encrypt: str, exc: type[WeComProtocolError], code: str) -> None:
    crypto = corp_crypto()
    with pytest.raises(exc) as info:
        crypto.verify_and_decrypt(crypto.sign(TS, NONCE, encrypt), TS, NONCE, encrypt)
    assert info.value.code == code


def test_forge_helper_accepts_valid_plaintext() -> None:
    assert corp_crypto().decrypt(forge(_plain(b"hello"))) == b"hello"
    assert corp_crypto().decrypt(forge(_plain(b""))) == b""


HOSTILE_SIGNATURES = [
    ("flipped char", B["query"]["msg_signature"][:-1] + "0"),
    ("empty", ""),
    ("non-ascii", "é" * 40),
    ("other token", msg_signature("other", TS, NONCE, B["encrypt"])),
    ("plain 3-value", plain_signature(TOKEN, TS, NONCE)),
]


@pytest.mark.parametrize(("case", "signature"), HOSTILE_SIGNATURES, ids=[case for case, _ in HOSTILE_SIGNATURES])
def test_wrong_signature(case: str, signature: str) -> None:
    with pytest.raises(SignatureError) as info:
        corp_crypto().verify_and_decrypt(signature, TS, NONCE, B["encrypt"])
    assert info.value.code == "bad_signature"


def test_signature_checked_over_timestamp_and_nonce() -> None:
    sig = B["query"]["msg_signature"]
    for ts, nonce in [("1712345679", NONCE), (TS, "987654322"), (" " + TS, NONCE)]:
        with pytest.raises(SignatureError):
            corp_crypto().verify_and_decrypt(sig, ts, nonce, B["encrypt"])


def test_verify_url_rejects_non_utf8_echo() -> None:
    crypto = corp_crypto()
    echostr = crypto.encrypt(b"\xff\xfe")
    with pytest.raises(MessageFormatError) as info:
        crypto.verify_url(crypto.sign(TS, NONCE, echostr), TS, NONCE, echostr)
    assert info.value.code == "bad_encoding"


@pytest.mark.parametrize("body", ["", "{", "[]", '{"encrypt":"x"}', '{"encrypt":"x","msgsignature":"y"}'])
def test_open_reply_json_rejects_malformed(body: str) -> None:
    with pytest.raises(WeComProtocolError):
        CallbackCrypto(TOKEN, KEY, "").open_reply_json(body)


def test_random_prefix_differs_per_call() -> None:
    crypto = corp_crypto()
    first, second = crypto.encrypt(b"same"), crypto.encrypt(b"same")
    assert first != second
    assert crypto.decrypt(first) == crypto.decrypt(second) == b"same"


def test_ai_bot_media_is_the_whole_file_under_the_callback_key_padded_to_32() -> None:
    """The bytes behind an AI-bot image URL: AES-256-CBC, iv = key[:16], PKCS#7 over 32 bytes, no framing."""
    crypto = CallbackCrypto(TOKEN, KEY, "")
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    aes = decode_aes_key(KEY)
    pad = 32 - len(image) % 32
    enc = Cipher(algorithms.AES(aes), modes.CBC(aes[:16])).encryptor()
    served = enc.update(image + bytes([pad]) * pad) + enc.finalize()  # built independently of encrypt_media
    assert crypto.encrypt_media(image) == served
    assert crypto.decrypt_media(served) == image
    with pytest.raises(DecryptError, match="multiple of 16"):
        crypto.decrypt_media(served[:-1])
    with pytest.raises(DecryptError, match="padding"):
        crypto.decrypt_media(b"<html>login</html>".ljust(32, b" "))  # a page instead of the file
