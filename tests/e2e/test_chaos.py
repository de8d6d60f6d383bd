"""The short chaos run: SIGKILL an nlp replica, a gateway replica and nats-server under a steady
load, on a supervised stack with two replicas of each killed service — the `make chaos` machinery
(bench/chaos.py) at a lower rate with fewer faults. Every message must be answered exactly once,
by the LLM, in its conversation's order; nothing refused, nothing left in any consumer, no dead
letter."""

from __future__ import annotations

import pytest

from bench.chaos import parse_args, run_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_killed_replicas_and_nats_lose_duplicate_and_reorder_nothing() -> None:
    args = parse_args(
        [
            "--users", "10", "--rate", "10", "--llm-latency", "0.3",
            "--replicas", "1", "nlp=2", "gateway=2",
            "--faults", "nlp", "gateway", "nats",
            "--baseline", "5", "--quiet", "8", "--drain-quiet", "3", "--max-drain", "60",
        ]
    )  # fmt: skip
    figures = await run_chaos(args)
    report = figures.render()
    assert [w.name for w in figures.windows[1:]] == ["SIGKILL nlp-1", "SIGKILL gateway-1", "SIGKILL nats"], report
    for window in figures.windows:
        assert window.sent > 0, report
        assert (window.lost, window.duplicated, window.order_violations, window.refused) == (0, 0, 0, 0), report
        assert window.notices == 0 and window.answered == window.sent, report  # the LLM's answer, every one
    assert figures.unexpected == 0 and figures.dead_letters == 0 and figures.lag_left == 0, report
    assert [r["name"] for r in figures.restarts] == ["nlp-1", "gateway-1", "nats"], report
    assert figures.passed, report
