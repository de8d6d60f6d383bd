"""A whole wxbot — NATS, Redis, the four services as processes — against fake WeCom and LLM servers.

One stack per session for the common case: starting it costs seconds, and tests use distinct
users so they cannot see each other's conversations. Modules that need other settings start
their own with `running_world`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import World, running_world


@pytest.fixture(scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_world(tmp_path_factory.mktemp("stack")) as started:
        yield started
