"""AI-bot callback payloads: what the gateway reads from them, and the 400 code a wrong shape gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wxbot_gateway.aibot_payload import AibotCallback, parse_callback
from wxbot_wecom.errors import MessageFormatError


def message(**extra: Any) -> dict[str, Any]:
    return {"msgid": "M1", "aibotid": "BOT", "chattype": "single", "from": {"userid": "zhangsan"}, **extra}


def parse(payload: object) -> AibotCallback:
    return parse_callback(json.dumps(payload, ensure_ascii=False).encode())


def test_text_voice_and_mixed_are_read_as_text() -> None:
    assert parse(message(msgtype="text", text={"content": "你好"})) == AibotCallback(
        "text", "M1", "BOT", "zhangsan", "", "你好", "", ""
    )
    assert parse(message(msgtype="voice", voice={"content": "语音转文字"})).text == "语音转文字"
    items = [
        {"msgtype": "text", "text": {"content": "look"}},
        {"msgtype": "image", "image": {"url": "https://x"}},
        {"msgtype": "text", "text": {"content": "at this"}},
    ]
    assert parse(message(msgtype="mixed", mixed={"msg_item": items})).text == "look at this"
    assert parse(message(msgtype="image", image={"url": "https://x"})).text == "[image]"


def test_the_image_url_of_an_image_or_the_first_image_of_a_mixed_message() -> None:
    assert parse(message(msgtype="image", image={"url": "https://cdn/a"})).image_url == "https://cdn/a"
    items = [
        {"msgtype": "text", "text": {"content": "which one?"}},
        {"msgtype": "image", "image": {"url": "https://cdn/b"}},
        {"msgtype": "image", "image": {"url": "https://cdn/c"}},
    ]
    mixed = parse(message(msgtype="mixed", mixed={"msg_item": items}))
    assert (mixed.text, mixed.image_url) == ("which one?", "https://cdn/b")
    assert parse(message(msgtype="text", text={"content": "hi"})).image_url == ""
    with pytest.raises(MessageFormatError):
        parse(message(msgtype="image", image={"url": ["not", "a", "string"]}))


def test_group_chat_refresh_and_event() -> None:
    group = parse(message(msgtype="text", text={"content": "hi"}, chattype="group", chatid="CHAT"))
    assert group.chat == "CHAT"
    assert parse(message(msgtype="text", text={"content": "hi"}, chatid="IGNORED")).chat == ""  # single chat
    refresh = parse({"msgid": "R1", "msgtype": "stream", "stream": {"id": "S1"}})
    assert (refresh.kind, refresh.stream_id) == ("stream", "S1")
    event = parse(message(msgtype="event", event={"eventtype": "enter_chat"}))
    assert (event.kind, event.event, event.text) == ("event", "enter_chat", "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),  # nesting beyond the recursion limit
        (b'["a list"]', "malformed_json"),
        (json.dumps({"msgid": "M1"}).encode(), "missing_field"),
        (json.dumps({"msgtype": ["text"]}).encode(), "bad_field"),
        (json.dumps(message(msgtype="text", text={"content": "x"}, **{"from": "zhangsan"})).encode(), "bad_field"),
        (json.dumps(message(msgtype="text", text="not an object")).encode(), "bad_field"),
        (json.dumps(message(msgtype="text", text={"content": {"deep": 1}})).encode(), "bad_field"),
        (json.dumps(message(msgtype="mixed", mixed={"msg_item": ["x"]})).encode(), "bad_field"),
        (json.dumps(message(msgtype="text", text={"content": "x"}, msgid="")).encode(), "missing_field"),
        (json.dumps(message(msgtype="text", text={"content": "x"}, msgid="m" * 300)).encode(), "bad_field"),
        (json.dumps({"msgtype": "stream", "stream": {}}).encode(), "missing_field"),
        (json.dumps({"msgtype": "stream", "stream": "S1"}).encode(), "bad_field"),
        (json.dumps(message(msgtype="text", text={"content": "x"})).encode("utf-16"), "malformed_json"),
        (b'{"msgtype": "text", "n": ' + b"9" * 5000 + b"}", "malformed_json"),  # past the int digit limit
        (json.dumps(message(msgtype="text", text={"content": "x\ud800"})).encode(), "bad_encoding"),
        (
            json.dumps(message(msgtype="text", text={"content": "x"}, **{"from": {"userid": "\udc00"}})).encode(),
            "bad_encoding",
        ),
        (json.dumps({"msgtype": "stream", "stream": {"id": "\ud800"}}).encode(), "bad_encoding"),
    ],
)
def test_wrong_shapes_are_format_errors(raw: bytes, code: str) -> None:
    with pytest.raises(MessageFormatError) as err:
        parse_callback(raw)
    assert err.value.code == code
