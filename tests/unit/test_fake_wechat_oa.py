"""The fake Official Account API over real HTTP: cgi-bin/token, message/custom/send and the fault knobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount

pytestmark = pytest.mark.timeout(30)

APP_ID, APP_SECRET = "wx0123456789abcdef", "oa-s3cret"


@pytest.fixture(scope="module")
async def oa_server() -> AsyncIterator[FakeOfficialAccount]:
    async with FakeOfficialAccount(APP_ID, APP_SECRET) as fake:
        yield fake


@pytest.fixture
async def oa(oa_server: FakeOfficialAccount) -> FakeOfficialAccount:
    oa_server.reset()
    return oa_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def token(http: httpx.AsyncClient, fake: FakeOfficialAccount, **params: str) -> Any:
    query = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET, **params}
    return (await http.get(f"{fake.base_url}/cgi-bin/token", params=query)).json()


async def custom_send(http: httpx.AsyncClient, fake: FakeOfficialAccount, access_token: str, body: object) -> Any:
    url = f"{fake.base_url}/cgi-bin/message/custom/send"
    return (await http.post(url, params={"access_token": access_token}, json=body)).json()


def text(openid: str, content: str) -> dict[str, Any]:
    return {"touser": openid, "msgtype": "text", "text": {"content": content}}


async def test_token_needs_client_credential_and_the_right_app(
    oa: FakeOfficialAccount, http: httpx.AsyncClient
) -> None:
    assert (await token(http, oa, grant_type="password"))["errcode"] == 40002
    assert (await token(http, oa, appid="wxother"))["errcode"] == 40013
    assert (await token(http, oa, secret="wrong"))["errcode"] == 40125
    issued = await token(http, oa)
    assert issued["errcode"] == 0 and issued["access_token"] and issued["expires_in"] == 7200
    oa.fail_next_gettokens(40164)
    assert (await token(http, oa))["errcode"] == 40164
    assert oa.stats()["gettoken_calls"] == 5


async def test_custom_send_records_text_and_answers_oa_errcodes(
    oa: FakeOfficialAccount, http: httpx.AsyncClient
) -> None:
    access = (await token(http, oa))["access_token"]
    assert (await custom_send(http, oa, access, text("oUSER", "你好")))["errcode"] == 0
    (sent,) = await oa.wait_for_messages("oUSER", 1, timeout=2.0)
    assert (sent.touser, sent.msgtype, sent.content, sent.agentid) == ("oUSER", "text", "你好", 0)
    assert (await custom_send(http, oa, "never-issued", text("oUSER", "x")))["errcode"] == 40001
    assert (await custom_send(http, oa, access, text("oUSER", "中" * 683)))["errcode"] == 45002  # 2049 bytes
    assert (await custom_send(http, oa, access, text("oUSER", "")))["errcode"] == 44004
    assert (await custom_send(http, oa, access, {"touser": "oUSER", "msgtype": "mpnews"}))["errcode"] == 40008
    oa.fail_next_sends(45015, 45047)
    codes = [(await custom_send(http, oa, access, text("oUSER", "late")))["errcode"] for _ in range(3)]
    assert codes == [45015, 45047, 0]
    oa.invalidate_tokens()
    assert (await custom_send(http, oa, access, text("oUSER", "x")))["errcode"] == 40001
    assert [m.content for m in oa.messages_for("oUSER")] == ["你好", "late"]
