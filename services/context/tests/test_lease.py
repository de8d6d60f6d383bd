"""The leader's announcements: what followers accept, and what they ignore."""

from __future__ import annotations

import pytest

from wxbot_context.lease import decode_applied, encode_applied


def test_an_announcement_round_trips() -> None:
    assert decode_applied(encode_applied(42, ["a", "b"])) == (42, ["a", "b"])


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"seq": "1", "c": []}', b'{"seq": 1}', b'{"c": []}'])
def test_anything_else_on_the_subject_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_applied(data)
