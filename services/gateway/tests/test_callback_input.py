"""The checks before a callback is looked at: media types and the timestamp window (pure)."""

from __future__ import annotations

import pytest

from wxbot_gateway.callback_input import JSON_TYPES, XML_TYPES, RefusedError, check_timestamp, media_type_accepted

NOW = 1_712_345_678.0


@pytest.mark.parametrize(
    ("header", "xml", "json"),
    [
        ("", True, True),  # some proxies drop it
        ("text/xml; charset=utf-8", True, False),
        ("Application/XML", True, False),
        ("application/json", False, True),
        ("text/plain", True, True),
        ("multipart/form-data; boundary=x", False, False),
        ("application/x-www-form-urlencoded", False, False),
    ],
)
def test_media_types(header: str, xml: bool, json: bool) -> None:
    assert (media_type_accepted(header, XML_TYPES), media_type_accepted(header, JSON_TYPES)) == (xml, json)


@pytest.mark.parametrize("timestamp", ["1712345678", "1712345078", "1712346278"])  # now, and 600 s either side
def test_timestamps_inside_the_window_pass(timestamp: str) -> None:
    check_timestamp(timestamp, 600, NOW)


@pytest.mark.parametrize(
    ("timestamp", "window", "status", "reason"),
    [
        ("", 600, 400, "bad_timestamp"),
        ("yesterday", 600, 400, "bad_timestamp"),
        ("1712345678.5", 600, 400, "bad_timestamp"),
        ("-1712345678", 600, 400, "bad_timestamp"),
        ("²", 600, 400, "bad_timestamp"),  # str.isdigit() says yes, int() says no
        ("١٧١٢٣٤٥٦٧٨", 600, 400, "bad_timestamp"),  # Arabic-Indic digits: int() would read them
        ("9" * 5000, 600, 400, "bad_timestamp"),  # int() refuses over 4300 digits
        ("9" * 5000, 0, 400, "bad_timestamp"),  # the format is checked with the window off too
        ("1712345077", 600, 403, "stale_timestamp"),
        ("1712346279", 600, 403, "stale_timestamp"),
    ],
)
def test_bad_or_stale_timestamps_are_refused(timestamp: str, window: int, status: int, reason: str) -> None:
    with pytest.raises(RefusedError) as refused:
        check_timestamp(timestamp, window, NOW)
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_with_the_window_off_any_number_passes() -> None:
    check_timestamp("1", 0, NOW)
