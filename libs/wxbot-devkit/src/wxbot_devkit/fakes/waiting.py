"""Deadline-bounded polling, the one way tests synchronise with the fakes (which may run on another thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.01


async def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:  # noqa: ASYNC109
    """Return the first truthy result of `check()`, polling until `timeout` seconds have passed.

    Polling (not an Event) works whether the fake serves on this loop or on a background thread.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_until_async(
    check: Callable[[], Awaitable[T | None]],
    timeout: float,  # noqa: ASYNC109 - a deadline for polling, as wait_until's
    what: str,
    every_s: float = POLL_INTERVAL_S,
) -> T:
    """`wait_until` for a check that must itself await (a Redis or NATS query)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(every_s)
