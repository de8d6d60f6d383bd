"""Fixtures shared by wxbot-common's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wxbot_devkit.launch import RedisServer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server of the test's own."""
    s = RedisServer(tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
