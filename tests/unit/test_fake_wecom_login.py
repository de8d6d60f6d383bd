"""The fake WeCom web login over real HTTP, as strict as WeCom: the login page's checks, codes that
work once, expire after five minutes and need a valid access token, errcode 40029 otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from wxbot_devkit.fakes.wecom import FakeWeCom

pytestmark = pytest.mark.timeout(30)

CORP, SECRET, AGENT = "wwlogincorp", "s3cret", 1000002
PARAMS = {
    "login_type": "CorpApp",
    "appid": CORP,
    "agentid": str(AGENT),
    "redirect_uri": "http://127.0.0.1:9/login/callback",
    "state": "st4te",
}


@pytest.fixture(scope="module")
async def wecom() -> AsyncIterator[FakeWeCom]:
    async with FakeWeCom(CORP, SECRET, agent_id=AGENT) as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


async def token(client: httpx.AsyncClient, wecom: FakeWeCom) -> str:
    body = (
        await client.get(f"{wecom.base_url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET})
    ).json()
    return str(body["access_token"])


async def code_for(client: httpx.AsyncClient, wecom: FakeWeCom, userid: str = "zhangsan") -> str:
    resp = await client.post(f"{wecom.base_url}/wwlogin/sso/confirm", data={**PARAMS, "userid": userid})
    assert resp.status_code == 302
    query = dict(parse_qsl(urlsplit(resp.headers["location"]).query))
    assert resp.headers["location"].startswith(PARAMS["redirect_uri"] + "?")
    assert query["state"] == "st4te"
    return query["code"]


async def userinfo(client: httpx.AsyncClient, wecom: FakeWeCom, code: str, access_token: str) -> dict[str, object]:
    params = {"access_token": access_token, "code": code}
    return dict((await client.get(f"{wecom.base_url}/cgi-bin/auth/getuserinfo", params=params)).json())


async def test_the_login_page_lists_members_for_a_valid_request(wecom: FakeWeCom, client: httpx.AsyncClient) -> None:
    page = await client.get(f"{wecom.base_url}/wwlogin/sso/login", params=PARAMS)
    assert page.status_code == 200 and "张三 (zhangsan)" in page.text and 'value="st4te"' in page.text.replace("'", '"')


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("login_type", "ServiceApp", "CorpApp"),
        ("appid", "wwother", "CorpID"),
        ("agentid", "", "agentid"),
        ("agentid", "1000003", "agentid"),
        ("redirect_uri", "/relative", "redirect_uri"),
        ("redirect_uri", "https://evil.example/login/callback", "50001"),
        ("state", "x" * 129, "128"),
    ],
)
async def test_the_login_page_refuses_what_wecom_refuses(
    wecom: FakeWeCom, client: httpx.AsyncClient, field: str, value: str, why: str
) -> None:
    page = await client.get(f"{wecom.base_url}/wwlogin/sso/login", params={**PARAMS, field: value})
    assert page.status_code == 400 and why in page.text
    confirm = await client.post(
        f"{wecom.base_url}/wwlogin/sso/confirm", data={**PARAMS, field: value, "userid": "zhangsan"}
    )
    assert confirm.status_code == 400


async def test_a_code_works_once(wecom: FakeWeCom, client: httpx.AsyncClient) -> None:
    code, access = await code_for(client, wecom), await token(client, wecom)
    assert await userinfo(client, wecom, code, access) == {"errcode": 0, "errmsg": "ok", "userid": "zhangsan"}
    again = await userinfo(client, wecom, code, access)
    assert again["errcode"] == 40029


async def test_codes_expire_and_unknown_ones_are_invalid(wecom: FakeWeCom, client: httpx.AsyncClient) -> None:
    code, access = await code_for(client, wecom), await token(client, wecom)
    wecom.web_login.expire_codes()
    assert (await userinfo(client, wecom, code, access))["errcode"] == 40029
    assert (await userinfo(client, wecom, "made-up", access))["errcode"] == 40029
    assert (await userinfo(client, wecom, "", access))["errcode"] == 41008


async def test_the_exchange_needs_a_valid_token_and_does_not_spend_the_code_without_one(
    wecom: FakeWeCom, client: httpx.AsyncClient
) -> None:
    code = await code_for(client, wecom)
    assert (await userinfo(client, wecom, code, "forged-token"))["errcode"] == 42001
    assert (await userinfo(client, wecom, code, await token(client, wecom)))["userid"] == "zhangsan"


async def test_nobody_unlisted_can_confirm(wecom: FakeWeCom, client: httpx.AsyncClient) -> None:
    resp = await client.post(f"{wecom.base_url}/wwlogin/sso/confirm", data={**PARAMS, "userid": "stranger"})
    assert resp.status_code == 400 and "nobody of that name" in resp.text


async def test_an_outsider_gets_an_openid_not_a_userid(wecom: FakeWeCom, client: httpx.AsyncClient) -> None:
    code = await code_for(client, wecom, "wx-guest")  # personal WeChat scans the QR code
    answer = await userinfo(client, wecom, code, await token(client, wecom))
    assert answer["errcode"] == 0 and "userid" not in answer
    assert str(answer["openid"]).startswith("o") and str(answer["external_userid"]).startswith("wm")
    assert (await userinfo(client, wecom, code, await token(client, wecom)))["errcode"] == 40029  # single use
