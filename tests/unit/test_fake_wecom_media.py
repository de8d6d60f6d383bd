"""The fake WeCom and Official Account media APIs over real HTTP: media/upload with WeCom's limits and
errcodes, media/get of uploaded and pre-loaded files, three-day expiry, image/voice messages."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from wxbot_devkit.fakes.media_files import amr_bytes, amr_duration_s, png_bytes, sniff, wav_bytes
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_devkit.fakes.wecom import FakeWeCom

pytestmark = pytest.mark.timeout(30)

CORP, SECRET, AGENT = "wwmediacorp", "s3cret", 1000002
APP_ID, APP_SECRET = "wx0123456789abcdef", "oa-s3cret"
MB = 1024 * 1024


@pytest.fixture(scope="module")
async def wecom_server() -> AsyncIterator[FakeWeCom]:
    async with FakeWeCom(CORP, SECRET) as fake:
        yield fake


@pytest.fixture
async def wecom(wecom_server: FakeWeCom) -> FakeWeCom:
    wecom_server.reset()
    return wecom_server


@pytest.fixture(scope="module")
async def oa_server() -> AsyncIterator[FakeOfficialAccount]:
    async with FakeOfficialAccount(APP_ID, APP_SECRET) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def wecom_token(http: httpx.AsyncClient, fake: FakeWeCom) -> str:
    resp = await http.get(f"{fake.base_url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET})
    return str(resp.json()["access_token"])


async def oa_token(http: httpx.AsyncClient, fake: FakeOfficialAccount) -> str:
    params = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}
    return str((await http.get(f"{fake.base_url}/cgi-bin/token", params=params)).json()["access_token"])


async def upload(
    http: httpx.AsyncClient,
    fake: FakeWeCom,
    token: str,
    media_type: str,
    data: bytes,
    filename: str = "f.bin",
    field: str = "media",
) -> Any:
    resp = await http.post(
        f"{fake.base_url}/cgi-bin/media/upload",
        params={"access_token": token, "type": media_type},
        files={field: (filename, data, "application/octet-stream")},
    )
    assert resp.status_code == 200
    return resp.json()


async def media_get(http: httpx.AsyncClient, fake: FakeWeCom, token: str, media_id: str) -> httpx.Response:
    return await http.get(f"{fake.base_url}/cgi-bin/media/get", params={"access_token": token, "media_id": media_id})


async def send(http: httpx.AsyncClient, fake: FakeWeCom, token: str, body: dict[str, Any]) -> Any:
    resp = await http.post(f"{fake.base_url}/cgi-bin/message/send", params={"access_token": token}, json=body)
    return resp.json()


def media_message(msgtype: str, media_id: str, touser: str = "zhangsan") -> dict[str, Any]:
    return {"touser": touser, "msgtype": msgtype, "agentid": AGENT, msgtype: {"media_id": media_id}}


def test_generated_files_are_what_they_claim() -> None:
    png = png_bytes(40, 30)
    assert sniff(png) == "png" and png[16:24] == (40).to_bytes(4, "big") + (30).to_bytes(4, "big")
    amr = amr_bytes(2.5)
    assert sniff(amr) == "amr" and amr_duration_s(amr) == 2.5
    assert amr_duration_s(amr[:-3]) is None  # a cut-off last frame: corrupt
    assert sniff(wav_bytes(0.2)) == "wav"


async def test_an_uploaded_image_is_served_and_sent_as_an_image_message(
    wecom: FakeWeCom, http: httpx.AsyncClient
) -> None:
    token = await wecom_token(http, wecom)
    png = png_bytes(64, 48)
    answer = await upload(http, wecom, token, "image", png, "cat.png")
    assert answer["errcode"] == 0 and answer["type"] == "image"
    assert isinstance(answer["created_at"], str) and answer["created_at"].isdigit()  # a string, as WeCom's sample
    media_id = answer["media_id"]
    [uploaded] = await wecom.wait_for_uploads(1)
    assert (uploaded.media_id, uploaded.media_type, uploaded.filename, uploaded.data) == (
        media_id,
        "image",
        "cat.png",
        png,
    )
    got = await media_get(http, wecom, token, media_id)
    assert got.headers["content-type"] == "image/png" and got.content == png
    assert 'filename="cat.png"' in got.headers["content-disposition"]

    sent = await send(http, wecom, token, media_message("image", media_id))
    assert sent["errcode"] == 0 and sent["msgid"]
    [message] = await wecom.wait_for_messages("zhangsan")
    assert (message.msgtype, message.media_id, message.content) == ("image", media_id, "")

    listed = (await http.get(f"{wecom.base_url}/_fake/uploads")).json()["uploads"]
    assert listed[0]["media_id"] == media_id and listed[0]["sha256"] == hashlib.sha256(png).hexdigest()
    assert (await http.get(f"{wecom.base_url}/_fake/media/{media_id}")).content == png


async def test_voice_upload_takes_amr_only_within_two_mb_and_sixty_seconds(
    wecom: FakeWeCom, http: httpx.AsyncClient
) -> None:
    token = await wecom_token(http, wecom)
    ok = await upload(http, wecom, token, "voice", amr_bytes(3.0), "v.amr")
    assert ok["errcode"] == 0 and ok["type"] == "voice"
    assert (await media_get(http, wecom, token, ok["media_id"])).headers["content-type"] == "audio/amr"
    assert (await send(http, wecom, token, media_message("voice", ok["media_id"])))["errcode"] == 0
    assert (await upload(http, wecom, token, "voice", wav_bytes(1.0), "v.wav"))["errcode"] == 40004
    assert (await upload(http, wecom, token, "voice", amr_bytes(3.0)[:-5], "v.amr"))["errcode"] == 40004  # corrupt
    assert (await upload(http, wecom, token, "voice", amr_bytes(61.0), "v.amr"))["errcode"] == 45007
    assert (await upload(http, wecom, token, "voice", amr_bytes(1.0) + b"\x3c" * 2 * MB, "v.amr"))["errcode"] == 40006
    assert len(wecom.uploads) == 1  # refused uploads store nothing


async def test_upload_limits_and_errcodes(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = await wecom_token(http, wecom)
    gif = b"GIF89a" + b"\x00" * 100
    assert (await upload(http, wecom, token, "image", gif, "a.gif"))["errcode"] == 40004  # JPG/PNG only
    heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100
    assert (await upload(http, wecom, token, "image", heic, "a.heic"))["errcode"] == 40004
    big_png = png_bytes(8, 8) + b"\x00" * (10 * MB)
    assert (await upload(http, wecom, token, "image", big_png, "big.png"))["errcode"] == 40009
    assert (await upload(http, wecom, token, "file", b"12345", "tiny.txt"))["errcode"] == 40006  # must be > 5 bytes
    assert (await upload(http, wecom, token, "file", b"", "empty.txt"))["errcode"] == 44001
    assert (await upload(http, wecom, token, "sticker", png_bytes(), "a.png"))["errcode"] == 40005
    assert (await upload(http, wecom, token, "image", png_bytes(), "a.png", field="file"))["errcode"] == 44001
    no_filename = await http.post(
        f"{wecom.base_url}/cgi-bin/media/upload",
        params={"access_token": token, "type": "file"},
        data={"media": "not a file part"},
    )
    assert no_filename.json()["errcode"] == 44001
    assert (await upload(http, wecom, "bad-token", "image", png_bytes(), "a.png"))["errcode"] == 42001
    doc = await upload(http, wecom, token, "file", b"hello world, a report", "report.txt")
    assert doc["errcode"] == 0
    assert (await send(http, wecom, token, media_message("file", doc["media_id"])))["errcode"] == 0
    assert [u.media_type for u in wecom.uploads] == ["file"]


async def test_media_messages_need_a_live_media_id_of_their_type(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = await wecom_token(http, wecom)
    voice = (await upload(http, wecom, token, "voice", amr_bytes(1.0), "v.amr"))["media_id"]
    assert (await send(http, wecom, token, media_message("image", voice)))["errcode"] == 40007
    assert (await send(http, wecom, token, media_message("image", "no-such-id")))["errcode"] == 40007
    assert (await send(http, wecom, token, media_message("image", "")))["errcode"] == 41006
    assert wecom.messages == []


async def test_preloaded_media_expiry_and_the_json_error(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = await wecom_token(http, wecom)
    voice = amr_bytes(2.0)
    wecom.add_media("VOICE-1", voice, "audio/amr")
    got = await media_get(http, wecom, token, "VOICE-1")
    assert got.content == voice and got.headers["content-type"] == "audio/amr"
    assert 'filename="VOICE-1.amr"' in got.headers["content-disposition"]
    image = (await upload(http, wecom, token, "image", png_bytes(), "a.png"))["media_id"]

    wecom.expire_media("VOICE-1")
    expired = await media_get(http, wecom, token, "VOICE-1")
    assert expired.status_code == 200 and expired.headers["content-type"].startswith("application/json")
    assert expired.json()["errcode"] == 40007
    assert (await media_get(http, wecom, token, image)).headers["content-type"] == "image/png"  # others live on

    await http.post(f"{wecom.base_url}/_fake/faults", json={"expire_media": True})
    assert (await media_get(http, wecom, token, image)).json()["errcode"] == 40007
    assert (await send(http, wecom, token, media_message("image", image)))["errcode"] == 40007
    assert (await media_get(http, wecom, token, "never-existed")).json()["errcode"] == 40007


async def test_media_ids_expire_after_the_ttl(http: httpx.AsyncClient) -> None:
    async with FakeWeCom(CORP, SECRET, media_ttl_s=0.0) as fake:
        token = await wecom_token(http, fake)
        media_id = (await upload(http, fake, token, "image", png_bytes(), "a.png"))["media_id"]
        assert (await media_get(http, fake, token, media_id)).json()["errcode"] == 40007


async def test_official_account_media(oa_server: FakeOfficialAccount, http: httpx.AsyncClient) -> None:
    oa_server.reset()
    token = await oa_token(http, oa_server)
    answer = await upload(http, oa_server, token, "image", png_bytes(), "a.png")
    assert set(answer) == {"type", "media_id", "created_at"} and isinstance(answer["created_at"], int)
    gif = await upload(http, oa_server, token, "image", b"GIF89a" + b"\x00" * 50, "a.gif")
    assert gif["type"] == "image"  # the OA takes GIF
    assert (await upload(http, oa_server, token, "file", b"a document!", "a.txt"))["errcode"] == 40004  # no type=file
    assert (await upload(http, oa_server, token, "voice", wav_bytes(0.5), "a.wav"))["errcode"] == 40005
    assert (await upload(http, oa_server, token, "image", png_bytes(), "a.png", field="x"))["errcode"] == 41005
    assert (await upload(http, oa_server, "stale", "image", png_bytes(), "a.png"))["errcode"] == 40001
    voice = await upload(http, oa_server, token, "voice", amr_bytes(1.0), "v.amr")

    url = f"{oa_server.base_url}/cgi-bin/message/custom/send"
    for msgtype, media_id in (("image", answer["media_id"]), ("voice", voice["media_id"])):
        body = {"touser": "oUSER", "msgtype": msgtype, msgtype: {"media_id": media_id}}
        assert (await http.post(url, params={"access_token": token}, json=body)).json()["errcode"] == 0
    wrong = {"touser": "oUSER", "msgtype": "image", "image": {"media_id": voice["media_id"]}}
    assert (await http.post(url, params={"access_token": token}, json=wrong)).json()["errcode"] == 40007
    sent = await oa_server.wait_for_messages("oUSER", 2)
    assert [(m.msgtype, m.media_id) for m in sent] == [("image", answer["media_id"]), ("voice", voice["media_id"])]
    got = await media_get(http, oa_server, token, voice["media_id"])
    assert got.headers["content-type"] == "audio/amr" and sniff(got.content) == "amr"


async def test_the_media_clock_ages_media_ids_and_upload_faults_come_first(http: httpx.AsyncClient) -> None:
    async with FakeWeCom(CORP, SECRET) as fake:
        token = await wecom_token(http, fake)
        media_id = (await upload(http, fake, token, "image", png_bytes(), "a.png"))["media_id"]
        fake.advance_media_clock(3 * 86400 - 60)
        assert (await media_get(http, fake, token, media_id)).headers["content-type"] == "image/png"  # not yet
        await http.post(f"{fake.base_url}/_fake/faults", json={"media_clock_s": 120, "upload_errcodes": [45009]})
        assert (await media_get(http, fake, token, media_id)).json()["errcode"] == 40007  # three days old
        assert (await send(http, fake, token, media_message("image", media_id)))["errcode"] == 40007
        assert (await upload(http, fake, token, "image", png_bytes(), "a.png"))["errcode"] == 45009
        fresh = (await upload(http, fake, token, "image", png_bytes(), "a.png"))["media_id"]
        assert (await send(http, fake, token, media_message("image", fresh)))["errcode"] == 0
        assert fake.stats()["upload_calls"] == 3
