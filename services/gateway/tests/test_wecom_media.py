"""Inbound media fetched on demand through media/get, against the fake WeCom and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.launch import RedisServer
from wxbot_gateway.wecom_api import MediaTooLargeError, WeComApiError, WeComClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[WeComClient, FakeWeCom]]:
    fake = FakeWeCom("wwmedia000000000001", "media-secret")
    server = RedisServer(tmp_path)
    await fake.start()
    await server.start()
    redis = Redis.from_url(server.url)
    http = TracedHttp(create_session(8, 5.0))
    try:
        yield WeComClient(http, redis, fake.base_url, fake.corp_id, fake.corp_secret, "1000002"), fake
    finally:
        await http.close()
        await redis.aclose()
        await server.stop()
        await fake.stop()


async def test_media_is_downloaded_with_its_type_and_name(client: tuple[WeComClient, FakeWeCom]) -> None:
    wecom, fake = client
    fake.add_media("MEDIA-1", b"\x89PNG fake image bytes", "image/png", "photo.png")
    media = await wecom.get_media("MEDIA-1")
    assert media.data == b"\x89PNG fake image bytes"
    assert media.content_type.startswith("image/png") and media.filename == "photo.png"


async def test_a_json_error_instead_of_the_file_is_an_error_not_a_file(client: tuple[WeComClient, FakeWeCom]) -> None:
    wecom, _ = client
    with pytest.raises(WeComApiError) as err:
        await wecom.get_media("NO-SUCH-MEDIA")
    assert err.value.errcode == 40007


async def test_an_expired_token_is_refreshed_once_for_media(client: tuple[WeComClient, FakeWeCom]) -> None:
    wecom, fake = client
    fake.add_media("MEDIA-2", b"voice", "audio/amr", "v.amr")
    await wecom.get_media("MEDIA-2")
    fake.invalidate_tokens()
    assert (await wecom.get_media("MEDIA-2")).data == b"voice"
    assert fake.stats()["gettoken_calls"] == 2


@pytest.mark.parametrize("limit", [10, 100])
async def test_a_download_over_the_limit_is_refused(client: tuple[WeComClient, FakeWeCom], limit: int) -> None:
    wecom, fake = client
    fake.add_media("MEDIA-BIG", b"#!AMR\n" + bytes(200), "audio/amr", "v.amr")
    with pytest.raises(MediaTooLargeError):
        await wecom.get_media("MEDIA-BIG", max_bytes=limit)
    assert len((await wecom.get_media("MEDIA-BIG", max_bytes=206)).data) == 206
