"""wxbot_wecom message XML: parsing the vectors' envelopes/messages, builders byte-exact, hostile XML/JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.errors import MessageFormatError
from wxbot_wecom.messages import (
    MAX_BODY_BYTES,
    MAX_ELEMENTS,
    InboundMessage,
    build_envelope_xml,
    build_inner_event_xml,
    build_inner_text_xml,
    build_reply_envelope_xml,
    build_text_reply_xml,
    cdata,
    dedup_key,
    parse_envelope,
    parse_inbound,
    parse_json_envelope,
    parse_reply_envelope,
)

V: dict[str, Any] = json.loads((Path(__file__).parent.parent / "fixtures" / "wecom-vectors.json").read_text("utf-8"))
CORP = V["config"]["corpid"]


# -- vectors ----------------------------------------------------------------------------------------------------


def test_c_parsed_fields() -> None:
    c = V["c_expected_decrypted"]
    f = c["fields"]
    msg = parse_inbound(c["plaintext_xml"].encode("utf-8"))
    assert msg == InboundMessage(
        to_user_name=f["ToUserName"],
        from_user_name=f["FromUserName"],
        create_time=int(f["CreateTime"]),
        msg_type=f["MsgType"],
        msg_id=f["MsgId"],
        agent_id=f["AgentID"],
        content=f["Content"],
        fields={},
    )
    assert dedup_key(msg) == c["dedup_key"]
    assert parse_inbound(c["plaintext_xml"]) == msg


def test_c_build_inner_text_xml_byte_exact() -> None:
    c = V["c_expected_decrypted"]
    f = c["fields"]
    xml = build_inner_text_xml(f["ToUserName"], f["FromUserName"], 1712345678, f["Content"], f["MsgId"], 1000002)
    assert xml == c["plaintext_xml"]


def test_i_build_inner_text_xml_without_agent() -> None:
    expected = V["i_official_account_safe_mode_post"]["expected_plain_xml"]
    xml = build_inner_text_xml(
        "gh_0123456789ab", "oABCDEFGHIJKLMNOPQRSTUVWXYZ", "1712345678", "hello", "24123456789012345"
    )
    assert xml == expected
    msg = parse_inbound(xml)
    assert (msg.agent_id, msg.msg_id, msg.event) == (None, "24123456789012345", None)


def test_d_build_text_reply_xml_byte_exact() -> None:
    d = V["d_passive_reply"]
    assert build_text_reply_xml("zhangsan", CORP, 1712345679, "收到：你好") == d["plaintext_xml"]


def test_b_envelope_roundtrip() -> None:
    b = V["b_inbound_text_message"]
    env = parse_envelope(b["body_xml"])
    assert build_envelope_xml(env.to_user_name, env.encrypt, env.agent_id) == b["body_xml"]


def test_d_reply_envelope_roundtrip() -> None:
    d = V["d_passive_reply"]
    env = parse_reply_envelope(d["response_body_xml"])
    assert (env.encrypt, env.msg_signature, env.timestamp, env.nonce) == (
        d["encrypt"],
        d["msg_signature"],
        d["timestamp"],
        d["nonce"],
    )
    assert build_reply_envelope_xml(env.encrypt, env.msg_signature, env.timestamp, env.nonce) == d["response_body_xml"]


def test_g_json_envelope() -> None:
    g = V["g_aibot_json"]
    assert parse_json_envelope(json.dumps(g["body_json"])) == g["body_json"]["encrypt"]


# -- events, nested fields, builders ----------------------------------------------------------------------------


def test_event_lowercased_and_dedup_key() -> None:
    xml = build_inner_event_xml(CORP, "lisi", 1712345000, "LOCATION", agent_id=1000002)
    msg = parse_inbound(xml)
    assert (msg.msg_type, msg.event, msg.event_key, msg.msg_id) == ("event", "location", None, None)
    assert dedup_key(msg) == "Event=lisi|1712345000|location"
    click = parse_inbound(build_inner_event_xml(CORP, "lisi", 1712345000, "click", "MENU_1"))
    assert (click.event, click.event_key) == ("click", "MENU_1")
    assert dedup_key(click) != dedup_key(msg)


def test_nested_and_extra_leaves_in_fields() -> None:
    xml = (
        "<xml>\n  <ToUserName><![CDATA[ww1]]></ToUserName>\n  <FromUserName>u1</FromUserName>\n"
        "  <CreateTime> 1712345000 </CreateTime>\n  <MsgType>event</MsgType>\n  <Event>scancode_push</Event>\n"
        "  <EventKey><![CDATA[#sendmsg#]]></EventKey>\n  <ScanCodeInfo><ScanType>qrcode</ScanType>"
        "<ScanResult>1</ScanResult></ScanCodeInfo>\n  <SendPicsInfo><Count>2</Count><PicList>"
        "<item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo>\n"
        "  <AgentID> 1000002 </AgentID><MediaId>m-1</MediaId><Empty/>\n</xml>"
    )
    msg = parse_inbound(xml)
    assert (msg.create_time, msg.agent_id, msg.media_id, msg.event_key) == (1712345000, "1000002", "m-1", "#sendmsg#")
    assert msg.fields == {
        "ScanCodeInfo/ScanType": "qrcode",
        "ScanCodeInfo/ScanResult": "1",
        "SendPicsInfo/Count": "2",
        "SendPicsInfo/PicList/item/PicMd5Sum": "a",
        "Empty": "",
    }
    assert dedup_key(msg) == "Event=u1|1712345000|scancode_push"


def test_media_message_without_msgid_gets_fallback_key() -> None:
    xml = GOOD.replace(">1<", ">5<").replace(">text<", ">image<")
    assert dedup_key(parse_inbound(xml)) == "Msg=u|5|image"


@pytest.mark.parametrize(
    "content", ["a]]>b", "]]>", "]]]]>", "  spaced\n\tlines  ", "", "<b>&amp;</b>", "🤖" * 10, "x\x00y\x1fz\ufffe"]
)
def test_content_roundtrips_through_cdata(content: str) -> None:
    xml = build_inner_text_xml(CORP, "u", 1, content, 1, 1)
    expected = content.replace("\x00", "").replace("\x1f", "").replace("\ufffe", "")
    assert parse_inbound(xml).content == expected
    assert parse_inbound(xml.encode("utf-8")).content == expected


def test_cdata_splits_terminator() -> None:
    assert cdata("a]]>b") == "<![CDATA[a]]]]><![CDATA[>b]]>"


@pytest.mark.parametrize("bad", ["12a", "-1", "", "1.5", "١٢"])
def test_builders_reject_non_numeric_fields(bad: str) -> None:
    with pytest.raises(ValueError, match="unsigned integer"):
        build_text_reply_xml("u", CORP, bad, "x")


# -- hostile XML ------------------------------------------------------------------------------------------------


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]><xml><ToUserName>&lol9;</ToUserName></xml>"
)
GOOD = (
    "<xml><ToUserName>c</ToUserName><FromUserName>u</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"
)

HOSTILE_XML: list[tuple[str, bytes | str, str]] = [
    ("billion laughs", BILLION_LAUGHS, "forbidden_xml"),
    ("external entity", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml>&e;</xml>', "forbidden_xml"),
    ("bare doctype", "<!DOCTYPE xml><xml/>", "forbidden_xml"),
    ("parameter entity", '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://evil/">%p;]><xml/>', "forbidden_xml"),
    ("empty bytes", b"", "empty"),
    ("whitespace", " \n\t", "empty"),
    ("unclosed", "<xml><ToUserName>c</xml>", "malformed_xml"),
    ("not xml", "hello", "malformed_xml"),
    ("json body", '{"encrypt": "x"}', "malformed_xml"),
    ("two roots", "<xml/><xml/>", "malformed_xml"),
    ("wrong root", GOOD.replace("xml>", "doc>"), "malformed_xml"),
    ("undefined entity", GOOD.replace(">u<", ">&nbsp;<"), "malformed_xml"),
    ("nul byte", GOOD.replace(">u<", ">\x00<"), "malformed_xml"),
    ("gbk bytes", GOOD.replace(">u<", ">你好<").encode("gbk"), "bad_encoding"),
    (
        "latin-1 declared",
        b'<?xml version="1.0" encoding="latin-1"?>' + GOOD.replace(">u<", ">\xe9<").encode("latin-1"),
        "bad_encoding",
    ),
    ("lone surrogate", GOOD.replace(">u<", ">\ud800<"), "bad_encoding"),
    ("too many elements", "<xml>" + "<a/>" * MAX_ELEMENTS + "</xml>", "too_large"),
    ("too large", b"<xml>" + b" " * MAX_BODY_BYTES + b"</xml>", "too_large"),
    ("missing FromUserName", GOOD.replace("<FromUserName>u</FromUserName>", ""), "missing_field"),
    ("empty MsgType", GOOD.replace(">text<", "><"), "missing_field"),
    ("non-numeric CreateTime", GOOD.replace(">1<", ">yesterday<"), "bad_field"),
    ("negative CreateTime", GOOD.replace(">1<", ">-1<"), "bad_field"),
    ("huge CreateTime", GOOD.replace(">1<", ">" + "9" * 5000 + "<"), "bad_field"),
]


@pytest.mark.parametrize(("case", "body", "code"), HOSTILE_XML, ids=[case for case, *_ in HOSTILE_XML])
def test_hostile_inner_xml(case: str, body: bytes | str, code: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        parse_inbound(body)
    assert info.value.code == code


def test_good_baseline_parses() -> None:
    assert parse_inbound(GOOD).from_user_name == "u"


HOSTILE_ENVELOPES: list[tuple[str, bytes | str, str]] = [
    ("empty", b"", "empty"),
    ("billion laughs", BILLION_LAUGHS, "forbidden_xml"),
    ("no Encrypt", "<xml><ToUserName>c</ToUserName><AgentID>1</AgentID></xml>", "missing_field"),
    ("empty Encrypt", "<xml><Encrypt><![CDATA[]]></Encrypt></xml>", "missing_field"),
    ("truncated", V["b_inbound_text_message"]["body_xml"][:-10], "malformed_xml"),
    ("binary", bytes(range(256)), "bad_encoding"),
]


@pytest.mark.parametrize(("case", "body", "code"), HOSTILE_ENVELOPES, ids=[case for case, *_ in HOSTILE_ENVELOPES])
def test_hostile_envelope(case: str, body: bytes | str, code: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        parse_envelope(body)
    assert info.value.code == code


HOSTILE_JSON: list[tuple[str, bytes | str, str]] = [
    ("empty", b"", "empty"),
    ("truncated", '{"encrypt": "abc', "malformed_json"),
    ("array", '["encrypt"]', "malformed_json"),
    ("xml", V["b_inbound_text_message"]["body_xml"], "malformed_json"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, "malformed_json"),
    ("non-utf8", b'{"encrypt": "\xff"}', "bad_encoding"),
    ("missing encrypt", '{"msg": "x"}', "missing_field"),
    ("encrypt not a string", '{"encrypt": 1}', "missing_field"),
]


@pytest.mark.parametrize(("case", "body", "code"), HOSTILE_JSON, ids=[case for case, *_ in HOSTILE_JSON])
def test_hostile_json_envelope(case: str, body: bytes | str, code: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        parse_json_envelope(body)
    assert info.value.code == code


def test_hostile_xml_inside_valid_ciphertext() -> None:
    """A correctly signed and encrypted payload is still untrusted XML."""
    crypto = CallbackCrypto(V["config"]["token"], V["config"]["encoding_aes_key"], CORP)
    query, body = crypto.build_callback(BILLION_LAUGHS, "1", "n", CORP, 1)
    plain = crypto.verify_and_decrypt(query["msg_signature"], "1", "n", parse_envelope(body).encrypt)
    with pytest.raises(MessageFormatError) as info:
        parse_inbound(plain)
    assert info.value.code == "forbidden_xml"
