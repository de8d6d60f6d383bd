"""Sessions and login states against a real Redis: forged or tampered cookies are no session, a
session expires on the server, a state works once and only with its own browser's cookie."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_console.sessions import SessionStore
from wxbot_devkit.launch import redis_client

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    async with redis_client(tmp_path) as client:
        yield client


async def test_a_session_is_found_only_by_its_own_signed_cookie(redis: Redis) -> None:
    store = SessionStore(redis, "k" * 40, ttl_s=600)
    session, cookie = await store.create("zhangsan")
    found = await store.load(cookie)
    assert found is not None and found.user == "zhangsan" and found.csrf_ok(session.csrf)
    assert not found.csrf_ok("") and not found.csrf_ok(session.csrf + "x")
    assert await store.load(None) is None and await store.load("") is None
    assert await store.load(cookie[:-2] + "xx") is None  # tampered signature
    assert await store.load(session.session_id) is None  # unsigned id
    assert await SessionStore(redis, "another-key-" * 4, ttl_s=600).load(cookie) is None
    await store.end(session)
    assert await store.load(cookie) is None  # logged out: the cookie is worth nothing


async def test_a_session_expires_on_the_server(redis: Redis) -> None:
    store = SessionStore(redis, "k" * 40, ttl_s=1)
    _, cookie = await store.create("zhangsan")
    assert await store.load(cookie) is not None
    deadline = time.monotonic() + 5
    while await store.load(cookie) is not None:
        assert time.monotonic() < deadline, "the session did not expire"
        await asyncio.sleep(0.1)


async def test_a_state_works_once_and_only_with_its_cookie(redis: Redis) -> None:
    store = SessionStore(redis, "k" * 40, ttl_s=600)
    state, cookie = await store.new_state()
    other_state, other_cookie = await store.new_state()
    assert not await store.take_state(state, other_cookie)  # another browser's cookie
    assert not await store.take_state("forged", cookie)
    assert not await store.take_state(state, None)
    assert await store.take_state(state, cookie)
    assert not await store.take_state(state, cookie)  # replayed
    assert await store.take_state(other_state, other_cookie)


async def test_a_local_login_token_is_spent_once(redis: Redis) -> None:
    store = SessionStore(redis, "k" * 40, ttl_s=600)
    assert await store.spend_local_token("t0ken")
    assert not await store.spend_local_token("t0ken")
    assert await store.spend_local_token("another")
