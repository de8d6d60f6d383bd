"""Bridge frames: what a client may send and the error it gets otherwise."""

from __future__ import annotations

import base64
import json

import pytest

from wxbot_gateway.ws_bridge import MAX_CONTENT_BYTES, Frame, FrameError, parse_frame


def test_a_valid_frame() -> None:
    assert parse_frame(json.dumps({"sender": " bob ", "content": "hi", "msg_type": "text"})) == Frame("bob", "hi", None)
    assert parse_frame(json.dumps({"sender": "bob", "content": "hi", "msg_id": "m1"})) == Frame("bob", "hi", "m1")


def test_an_image_frame_by_url_or_inline() -> None:
    by_url = parse_frame(json.dumps({"sender": "bob", "msg_type": "image", "image_url": "https://x.test/a.png"}))
    assert by_url == Frame("bob", "", None, image_url="https://x.test/a.png") and by_url.is_image
    inline = {"sender": "bob", "msg_type": "image", "image_base64": base64.b64encode(b"\x89PNG").decode()}
    assert parse_frame(json.dumps({**inline, "content": "what is it?"})) == Frame(
        "bob", "what is it?", None, image_data=b"\x89PNG"
    )


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("nope", "not JSON"),
        ("[]", "JSON object"),
        (json.dumps({"content": "hi"}), "'sender'"),
        (json.dumps({"sender": "x" * 129, "content": "hi"}), "'sender'"),
        (json.dumps({"sender": "bob", "content": "  "}), "'content'"),
        (json.dumps({"sender": "bob", "content": "好" * MAX_CONTENT_BYTES}), "exceeds"),
        (json.dumps({"sender": "bob", "content": "hi", "msg_type": "video"}), "msg_type"),
        (json.dumps({"sender": "bob", "msg_type": "image"}), "exactly one"),
        (json.dumps({"sender": "bob", "msg_type": "image", "image_url": "u", "image_base64": "AA=="}), "exactly one"),
        (json.dumps({"sender": "bob", "msg_type": "image", "image_url": "file:///etc/passwd"}), "http"),
        (json.dumps({"sender": "bob", "msg_type": "image", "image_base64": "not base64!"}), "base64"),
        (json.dumps({"sender": "bob", "msg_type": "image", "image_base64": ""}), "base64"),
        (json.dumps({"sender": "bob", "content": "hi", "msg_id": 5}), "'msg_id'"),
        ("[" * 20_000 + "]" * 20_000, "not JSON"),  # RecursionError, not ValueError
        ('{"sender": "bob", "content": "hi", "n": ' + "9" * 5000 + "}", "not JSON"),
        (json.dumps({"sender": "bob\ud800", "content": "hi"}), "lone surrogates"),
        (json.dumps({"sender": "bob", "content": "\udfff" * 5000}), "lone surrogates"),  # before its size is taken
        (json.dumps({"sender": "bob", "content": "hi", "msg_id": "m\ud800"}), "'msg_id'"),
    ],
)
def test_bad_frames_say_what_is_wrong(frame: str, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        parse_frame(frame)
