"""Which callbacks may skip the Redis lookup: those whose every earlier delivery is inside the window."""

from __future__ import annotations

import pytest

from wxbot_gateway.dedupe import FRESH_FOR_S, SKEW_MARGIN_S, within_log_window

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("age_s", "fresh"),
    [
        (0, True),
        (15, True),  # WeCom's retries come within seconds
        (FRESH_FOR_S - 1, True),
        (FRESH_FOR_S, False),  # a first delivery may have left the duplicate window: ask Redis
        (3600, False),
        (-SKEW_MARGIN_S, True),  # WeCom's clock a little ahead of ours
        (-SKEW_MARGIN_S - 1, False),  # far in the future: do not trust it
    ],
)
def test_only_recent_messages_rely_on_the_jetstream_window(age_s: float, fresh: bool) -> None:
    assert within_log_window(int(NOW - age_s), now=NOW) is fresh


def test_the_margin_leaves_room_inside_the_stream_window() -> None:
    assert 0 < FRESH_FOR_S < FRESH_FOR_S + SKEW_MARGIN_S
