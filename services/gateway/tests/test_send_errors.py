"""What a send does with each kind of answer from the WeCom and Official Account APIs, against the
fakes and a real Redis: give up only on configuration, recipient and content errors; retry the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.http_client import TracedHttp, create_session
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.launch import RedisServer
from wxbot_gateway.errcodes import BY_API, SHARED, Outcome, classify
from wxbot_gateway.errors import DeliveryRefusedError, RetryLaterError, errcode_of
from wxbot_gateway.wecom_api import OFFICIAL_ACCOUNT, WeComApiError, WeComClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    await server.start()
    yield server.url
    await server.stop()


@pytest.fixture
async def wecom(redis_url: str) -> AsyncIterator[tuple[WeComClient, FakeWeCom, list[int]]]:
    fake = FakeWeCom("wwsenderrors0000001", "send-secret")
    await fake.start()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    http = TracedHttp(create_session(8, 2.0))
    config_errors: list[int] = []
    client = WeComClient(
        http,
        redis,
        fake.base_url,
        fake.corp_id,
        fake.corp_secret,
        "1000002",
        on_config_error=lambda errcode, _reason: config_errors.append(errcode),
    )
    try:
        yield client, fake, config_errors
    finally:
        await http.close()
        await redis.aclose()
        await fake.stop()


@pytest.fixture
async def oa(redis_url: str) -> AsyncIterator[tuple[WeComClient, FakeOfficialAccount]]:
    fake = FakeOfficialAccount("wxsenderrors00001", "oa-secret")
    await fake.start()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    http = TracedHttp(create_session(8, 2.0))
    client = WeComClient(http, redis, fake.base_url, fake.corp_id, fake.corp_secret, "", flavour=OFFICIAL_ACCOUNT)
    try:
        yield client, fake
    finally:
        await http.close()
        await redis.aclose()
        await fake.stop()


@pytest.mark.parametrize(
    ("errcode", "outcome"),
    [
        (40056, Outcome.CONFIG),  # bad agent id
        (301002, Outcome.CONFIG),
        (60020, Outcome.CONFIG),  # IP not trusted
        (81013, Outcome.RECIPIENT),  # no valid receiver
        (40003, Outcome.RECIPIENT),
        (45002, Outcome.CONTENT),
        (44004, Outcome.CONTENT),
    ],
)
async def test_errors_no_retry_can_fix_give_up_at_once(
    wecom: tuple[WeComClient, FakeWeCom, list[int]], errcode: int, outcome: Outcome
) -> None:
    client, fake, config_errors = wecom
    fake.fail_next_sends(errcode)
    with pytest.raises(WeComApiError) as refused:
        await client.send_part("alice", "hi")
    assert refused.value.errcode == errcode and classify("wecom", errcode).outcome is outcome
    assert fake.stats()["send_calls"] == 1  # not tried again
    assert config_errors == ([errcode] if outcome is Outcome.CONFIG else [])  # operators hear of config only


@pytest.mark.parametrize("errcode", [-1, 45009, 45033, 50001, 41001, 47001])
async def test_busy_limits_and_unknown_codes_are_retried_later_with_their_errcode(
    wecom: tuple[WeComClient, FakeWeCom, list[int]], errcode: int
) -> None:
    client, fake, _ = wecom
    fake.fail_next_sends(errcode)
    with pytest.raises(RetryLaterError) as later:
        await client.send_part("bob", "hi")
    assert errcode_of(later.value) == errcode
    assert await client.send_part("bob", "hi again")  # the next attempt goes through
    assert [m.content for m in fake.messages_for("bob")] == ["hi again"]


async def test_a_token_rejected_again_after_its_refresh_is_retried_later_not_refused(
    wecom: tuple[WeComClient, FakeWeCom, list[int]],
) -> None:
    client, fake, _ = wecom
    await client.send_part("carol", "warm up")
    calls = fake.stats()["gettoken_calls"]
    fake.fail_next_sends(42001, 42001)
    with pytest.raises(RetryLaterError) as later:
        await client.send_part("carol", "storm")
    assert later.value.errcode == 42001
    assert fake.stats()["gettoken_calls"] == calls + 1  # one refresh per send, not a loop
    assert await client.send_part("carol", "storm")


async def test_an_unreachable_api_is_retried_later_with_errcode_0(
    wecom: tuple[WeComClient, FakeWeCom, list[int]],
) -> None:
    client, fake, _ = wecom
    await client.send_part("dan", "warm up")  # a pooled keep-alive connection exists
    await fake.refuse_connections()
    try:
        with pytest.raises(TransientError) as down:
            await client.send_part("dan", "anyone?")
        assert not isinstance(down.value, DeliveryRefusedError) and errcode_of(down.value) == 0
    finally:
        await fake.accept_connections()
    assert await client.send_part("dan", "back")


async def test_a_wrong_secret_is_held_and_reported_not_asked_again(
    wecom: tuple[WeComClient, FakeWeCom, list[int]],
) -> None:
    client, fake, config_errors = wecom
    fake.fail_next_gettokens(40001)
    for _ in range(3):
        with pytest.raises(WeComApiError) as refused:
            await client.send_part("erin", "hi")
        assert refused.value.errcode == 40001
    assert fake.stats()["gettoken_calls"] == 1 and config_errors == [40001]


async def test_official_account_40001_is_a_stale_token_and_45015_a_closed_window(
    oa: tuple[WeComClient, FakeOfficialAccount],
) -> None:
    client, fake = oa
    await client.send_part("oUSER1", "warm up")
    fake.invalidate_tokens()  # custom/send answers 40001 to the old token
    assert await client.send_part("oUSER1", "after the refresh") == ""
    fake.fail_next_sends(45015)
    with pytest.raises(WeComApiError) as refused:
        await client.send_part("oUSER1", "three days later")
    assert refused.value.errcode == 45015 and "48-hour" in str(refused.value)
    fake.fail_next_sends(40003)
    with pytest.raises(WeComApiError):
        await client.send_part("oNOSUCHUSER", "hi")
    assert [m.content for m in fake.messages_for("oUSER1")] == ["warm up", "after the refresh"]


def test_every_listed_code_says_why() -> None:
    for table in (SHARED, *BY_API.values()):
        assert all(verdict.reason for verdict in table.values())
    assert classify("wecom", 40001).outcome is Outcome.CONFIG
    assert classify("wechat", 40001).outcome is Outcome.REFRESH_TOKEN
    assert classify("wechat", 123456).outcome is Outcome.RETRY
