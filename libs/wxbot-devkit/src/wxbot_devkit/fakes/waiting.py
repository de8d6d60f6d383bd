"""Deadline-bounded polling, the one way tests synchronise with the fakes (which may run on another thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
