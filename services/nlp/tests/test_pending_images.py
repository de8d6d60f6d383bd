"""The pending image of a conversation against a real Redis: which later question may use it, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_common.media.store import MediaRef
from wxbot_devkit.launch import redis_client
from wxbot_nlp.vision import PendingImages, may_have_image
from wxbot_proto.context.v1 import context_pb2 as ctx

pytestmark = pytest.mark.timeout(30)

REF = MediaRef("sha256-aa", 1234, "image/png", "aa" * 32)
NEWER = MediaRef("sha256-bb", 99, "image/jpeg", "bb" * 32)


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Redis]:
    async with redis_client(Path(tmp_path_factory.mktemp("redis"))) as client:
        yield client


async def test_the_first_question_within_the_window_claims_the_image_and_keeps_it_on_redelivery(redis: Redis) -> None:
    pending = PendingImages(redis, window_s=300)
    await pending.remember("c1", REF, seq=10, at=1000.0)
    assert 0 < await redis.ttl("wxbot:nlp:image:c1") <= 360
    assert await pending.claim("c1", "q1", seq=12, at=1100.0) == REF
    assert await pending.claim("c1", "q1", seq=12, at=1100.0) == REF  # the same message redelivered
    assert await pending.claim("c1", "q2", seq=14, at=1120.0) is None  # the next question is text again
    assert await pending.claim("c2", "q1", seq=12, at=1100.0) is None  # another conversation


async def test_too_late_or_earlier_than_the_image_gets_nothing(redis: Redis) -> None:
    pending = PendingImages(redis, window_s=300)
    await pending.remember("c3", REF, seq=20, at=1000.0)
    assert await pending.claim("c3", "early", seq=19, at=999.0) is None  # a message from before the image
    assert await pending.claim("c3", "late", seq=25, at=1301.0) is None  # past IMAGE_FOLLOWUP_S
    assert await pending.claim("c3", "ok", seq=26, at=1299.0) == REF


async def test_a_newer_image_replaces_the_older_and_a_redelivered_older_one_does_not(redis: Redis) -> None:
    pending = PendingImages(redis, window_s=300)
    await pending.remember("c4", REF, seq=30, at=1000.0)
    await pending.remember("c4", NEWER, seq=32, at=1010.0)
    await pending.remember("c4", REF, seq=30, at=1000.0)  # the older image's handler redelivered
    assert await pending.claim("c4", "q", seq=33, at=1020.0) == NEWER
    await pending.forget("c4")  # /reset
    assert await pending.claim("c4", "q", seq=33, at=1020.0) is None


def _turn(role: ctx.Role.ValueType, at: float, image: bool = False) -> ctx.Turn:
    turn = ctx.Turn(role=role, text="[image]" if image else "words", image=image)
    turn.at.FromNanoseconds(int(at * 1e9))
    return turn


USER, BOT = ctx.ROLE_USER, ctx.ROLE_ASSISTANT


@pytest.mark.parametrize(
    ("turns", "complete", "truncated", "expected"),
    [
        ([], True, False, False),  # a first message: an image would have left a turn
        ([_turn(USER, 990.0), _turn(BOT, 991.0)], True, False, False),  # all of it, no image
        ([_turn(USER, 990.0, image=True), _turn(BOT, 991.0)], True, False, True),
        ([_turn(USER, 100.0, image=True), _turn(BOT, 101.0)], True, False, True),  # too old: the claim says no
        ([_turn(USER, 900.0), _turn(BOT, 901.0)], True, True, True),  # cut inside the window
        ([_turn(USER, 500.0), _turn(BOT, 501.0), _turn(USER, 950.0), _turn(BOT, 951.0)], True, True, False),
        ([], True, True, True),  # nothing fitted the budget: nothing to go by
        ([], False, False, True),  # an earlier message unanswered: the history cannot tell
    ],
    ids=[
        "no history",
        "no image turn",
        "an image turn",
        "an old image",
        "cut inside the window",
        "cut before the window",
        "nothing fitted",
        "incomplete",
    ],
)
def test_a_question_asks_for_a_pending_image_only_when_its_history_allows_one(
    turns: list[ctx.Turn], complete: bool, truncated: bool, expected: bool
) -> None:
    assert may_have_image(turns, complete, truncated, asked_at=1000.0, window_s=300.0) is expected
