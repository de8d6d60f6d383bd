"""Image in (issue 14, items 3 and 6): an image from any channel — WeCom app, Official Account, AI bot,
bridge — is fetched, stored and shown to the chat model as an `image_url` part; a question soon
after is asked with it; bad images get one plain notice. Also the Official Account's voice without
`Recognition` (item 2), transcribed through the OA's own media/get."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    CONFIG,
    VECTORS,
    World,
    bridge_until_reply,
    counter_by_label,
    llm_reply,
    logged,
    running_world,
    send_image,
    send_text,
)
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.llm import ChatRequest
from wxbot_devkit.fakes.media_files import amr_bytes, png_bytes, sniff
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_devkit.otlp_sink import SpanRecord
from wxbot_gateway.conversation import conversation_id
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_nlp.drafting import APOLOGY, IMAGE_NOTICE
from wxbot_nlp.vision import DESCRIBE_PROMPT
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.policy import WORD_NOTICE
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.signature import plain_signature

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEADLINE_S = 2.0
ANSWER_DEADLINE_S = 4.0
APP_ID = VECTORS["i_official_account_safe_mode_post"]["appid"]
GH_ID = "gh_0123456789ab"
BRIDGE_TOKEN = "bridge-image-token"
AIBOT = CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], "")
_OA_MSG_IDS = itertools.count(26_000_000_000_000_001)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replies(request: ChatRequest) -> str:
    """Say which images (by digest) and which text the model was given."""
    if images := request.images():
        seen = ",".join(digest(i)[:16] for i in images)
        return f"I see {seen} | {request.last_user_message[:24]} (saw {len(request.messages)} messages)"
    return llm_reply(request)


@pytest.fixture(scope="module")
async def iw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[World, FakeOfficialAccount]]:
    oa = FakeOfficialAccount(APP_ID, "oa-secret")
    await oa.start()
    lexicon = tmp_path_factory.mktemp("lexicon") / "terms.txt"
    lexicon.write_text("禁语测试\n", encoding="utf-8")
    env = {
        "SAFETY_WORDLIST_FILES": str(lexicon),
        "IMAGE_IN_DEADLINE_S": str(DEADLINE_S),
        "VOICE_DEADLINE_S": str(DEADLINE_S),
        "LLM_ANSWER_DEADLINE_S": str(ANSWER_DEADLINE_S),
        "LLM_BACKOFF_BASE_S": "0.1",
        "NLP_CACHE_TTL_S": "0",
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": "oa-secret",
        "WECHAT_TOKEN": CONFIG["token"],
        "WECHAT_API_BASE": oa.base_url,
        "AIBOT_TOKEN": CONFIG["token"],
        "AIBOT_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "GATEWAY_BRIDGE_TOKEN": BRIDGE_TOKEN,
    }
    try:
        async with running_world(tmp_path_factory.mktemp("images"), env, reply=replies) as world:
            yield world, oa
    finally:
        await oa.stop()


def image_requests(world: World, data: bytes) -> list[ChatRequest]:
    """The chat requests that carried exactly this image (decoded from its data URL)."""
    return [r for r in world.llm.requests if digest(data) in {digest(i) for i in r.images()}]


async def image_outcomes(world: World) -> dict[str, float]:
    """`wxbot_gateway_image_total` by outcome."""
    return await counter_by_label(world, "gateway", "wxbot_gateway_image_total", "outcome")


async def received(world: World, user: str) -> list[ev.MessageReceived]:
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    return [ev.MessageReceived.FromString(d) for d in await logged(world, EventKind.RECEIVED, conversation)]


def gif_bytes() -> bytes:
    """A real two-frame animated GIF from ffmpeg's test source."""
    exe = Ffmpeg.locate().exe
    argv = [exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=2"]
    return subprocess.run([*argv, "-frames:v", "2", "-f", "gif", "pipe:1"], capture_output=True, check=True).stdout


# -- WeCom app ----------------------------------------------------------------------------------------


async def test_an_image_message_makes_the_chat_model_receive_that_image(iw: tuple[World, FakeOfficialAccount]) -> None:
    """The issue's Done-when: the model gets an `image_url` part holding the very image behind the MediaId."""
    world, _ = iw
    user = "e2e-image-ok"
    image = png_bytes(64, 48, (30, 140, 200))
    world.wecom.add_media("img-ok", image, "image/png", "img.png", "image")
    resp, msg_id = await send_image(world, user, "img-ok")
    assert resp.status_code == 200 and resp.content == b""

    [answer] = await world.wecom.wait_for_messages(user, 1, timeout=20)
    assert answer.content.startswith(f"I see {digest(image)[:16]} | ")
    [asked] = image_requests(world, image)
    assert asked.model == "fake-model" and len(asked.image_urls) == 1
    assert asked.image_urls[0].startswith("data:image/png;base64,")
    assert asked.last_user_message == DESCRIBE_PROMPT  # an image alone: a short description

    # The log holds a reference to the stored image, never the bytes.
    [event] = await received(world, user)
    assert event.kind == ev.MESSAGE_KIND_IMAGE and event.text == "[image]"
    assert event.attributes["wxbot.image"] == "ok" and event.media.sha256 == digest(image)
    assert event.media.content_type == "image/png" and len(event.SerializeToString()) < 2_000

    # The image step and its media/get, inside the message's trace.
    def image_trace(spans: list[SpanRecord]) -> list[SpanRecord] | None:
        step = next(
            (s for s in spans if s.name == "image.fetch" and s.attributes.get("wxbot.image.outcome") == "ok"), None
        )
        children = [s for s in spans if step is not None and s.parent_span_id == step.span_id and s.kind == "CLIENT"]
        return children if any("media/get" in str(s.attributes.get("url.full")) for s in children) else None

    assert await world.sink.wait_for(image_trace, timeout=20)

    # WeCom's retry of the same MsgId: not downloaded again, not answered again.
    fetched = world.wecom.media_get_calls
    again, _ = await send_image(world, user, "img-ok", msg_id=msg_id)
    assert again.status_code == 200 and world.wecom.media_get_calls == fetched
    await send_text(world, user, "thanks")
    got = await world.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and "| thanks" in got[1].content  # the first question after an image carries it


async def test_concurrent_retries_of_one_image_are_one_message(iw: tuple[World, FakeOfficialAccount]) -> None:
    """WeCom retries while the first attempt is still fetching: both fetch, one event, one answer."""
    world, _ = iw
    user = "e2e-image-race"
    image = png_bytes(30, 20, (1, 2, 3))
    world.wecom.add_media("img-race", image, "image/png", "img.png", "image")
    msg_id = 7_390_000_000_000_000_001
    sent = await asyncio.gather(*(send_image(world, user, "img-race", msg_id=msg_id) for _ in range(4)))
    assert [resp.status_code for resp, _ in sent] == [200] * 4
    await world.wecom.wait_for_messages(user, 1, timeout=20)
    await send_text(world, user, "one answer only?")
    got = await world.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and "| one answer only?" in got[1].content
    assert len(await received(world, user)) == 2  # the image once, the question once
    assert len([r for r in image_requests(world, image) if r.last_user_message == DESCRIBE_PROMPT]) == 1


async def test_a_question_after_an_image_is_asked_with_that_image(iw: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = iw
    user = "e2e-image-followup"
    image = png_bytes(40, 40, (250, 200, 10))
    world.wecom.add_media("img-followup", image, "image/png", "img.png", "image")
    await send_image(world, user, "img-followup")
    [described] = await world.wecom.wait_for_messages(user, 1, timeout=20)

    await send_text(world, user, "这是什么颜色？")
    got = await world.wecom.wait_for_messages(user, 2, timeout=20)
    assert got[1].content.startswith(f"I see {digest(image)[:16]} | 这是什么颜色？")
    question = next(r for r in image_requests(world, image) if r.last_user_message == "这是什么颜色？")
    # History is text: the image turn reads "[image]" and its description; the old image is not re-sent.
    history = [(m["role"], m["content"]) for m in question.messages[1:-1]]
    assert history == [("user", "[image]"), ("assistant", described.content)]
    assert len(question.images()) == 1

    # The image belongs to the first question only: the next one is text again.
    await send_text(world, user, "谢谢")
    got = await world.wecom.wait_for_messages(user, 3, timeout=20)
    assert got[2].content.startswith("LLM says: 谢谢")
    assert len(image_requests(world, image)) == 2


async def test_pic_url_is_the_fallback_and_a_gif_gives_its_first_frame(iw: tuple[World, FakeOfficialAccount]) -> None:
    """media/get answers 40007 (an unknown MediaId): the PicUrl is fetched instead; the GIF reaches the
    model as a JPEG of its first frame."""
    world, _ = iw
    user = "e2e-image-picurl"
    url = world.wecom.serve_file("anim.gif", gif_bytes(), "image/gif")
    await send_image(world, user, "no-such-media-id", pic_url=url)
    [answer] = await world.wecom.wait_for_messages(user, 1, timeout=20)
    assert answer.content.startswith("I see ")
    [event] = await received(world, user)
    assert event.attributes["wxbot.image"] == "ok" and event.media.content_type == "image/jpeg"
    sent = next(r for r in world.llm.requests if r.images() and digest(r.images()[0]) == event.media.sha256)
    assert sniff(sent.images()[0]) == "jpeg" and sent.image_urls[0].startswith("data:image/jpeg;base64,")
    assert "anim.gif" in world.wecom.cdn_requests


HTML = b"<!DOCTYPE html><html><head><title>Login</title></head><body>please log in</body></html>"
FAKE_HEIC = struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("case", "media", "pic", "reason"),
    [
        ("huge", b"\xff\xd8\xff\xe0" + bytes(40 * 1024 * 1024), None, "too_large"),  # refused by Content-Length
        ("json-error", None, None, "download"),  # media/get answers errcode 40007 (HTTP 200), no PicUrl
        ("html", None, HTML, "not_image"),  # the MediaId fails and the PicUrl answers a login page
        ("heic", FAKE_HEIC, None, "unsupported"),  # a HEIC ffmpeg cannot decode
        ("empty", b"", None, "empty"),
    ],
)
async def test_a_bad_image_gets_one_notice_and_no_model_call(
    iw: tuple[World, FakeOfficialAccount], case: str, media: bytes | None, pic: bytes | None, reason: str
) -> None:
    world, _ = iw
    user = f"e2e-image-{case}"
    before = (await image_outcomes(world)).get(reason, 0.0)
    if media is not None:
        world.wecom.add_media(f"img-{case}", media, "image/jpeg", "img.jpg", "image")
    url = world.wecom.serve_file(f"{case}.html", pic, "text/html") if pic is not None else ""
    calls = len(world.llm.requests)
    resp, _ = await send_image(world, user, f"img-{case}", pic_url=url)
    assert resp.status_code == 200
    assert [m.content for m in await world.wecom.wait_for_messages(user, 1, timeout=20)] == [IMAGE_NOTICE]
    await send_text(world, user, f"after the {case} image")  # a later answer proves no second reply came
    got = await world.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and got[1].content.startswith(f"LLM says: after the {case} image")
    assert [r.last_user_message for r in world.llm.requests[calls:]] == [f"after the {case} image"]
    assert not any(r.images() for r in world.llm.requests[calls:])
    assert (await image_outcomes(world)).get(reason, 0.0) == before + 1


async def test_a_slow_media_get_ends_at_the_deadline_with_one_notice(iw: tuple[World, FakeOfficialAccount]) -> None:
    """The callback is answered within IMAGE_IN_DEADLINE_S (under WeCom's 5 s), so WeCom does not retry."""
    world, _ = iw
    user = "e2e-image-slow"
    before = (await image_outcomes(world)).get("timeout", 0.0)
    world.wecom.add_media("img-slow", png_bytes(16, 16), "image/png", "img.png", "image")
    world.wecom.latency_s = DEADLINE_S + 1
    try:
        started = time.monotonic()
        resp, _ = await send_image(world, user, "img-slow")
        took = time.monotonic() - started
    finally:
        world.wecom.latency_s = 0.0
    assert resp.status_code == 200 and DEADLINE_S <= took < 5.0
    assert [m.content for m in await world.wecom.wait_for_messages(user, 1, timeout=20)] == [IMAGE_NOTICE]
    assert (await image_outcomes(world)).get("timeout", 0.0) == before + 1


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_a_vision_model_down_or_slow_gets_one_apology(iw: tuple[World, FakeOfficialAccount], fault: str) -> None:
    world, _ = iw
    user = f"e2e-image-vision-{fault}"
    image = png_bytes(32, 32, (10, 200, 90) if fault == "down" else (90, 10, 200))
    world.wecom.add_media(f"img-vision-{fault}", image, "image/png", "img.png", "image")
    if fault == "down":
        world.llm.fail_next(503, 503, 503)  # the first try and both retries
    else:
        world.llm.latency_s = ANSWER_DEADLINE_S + 1
    try:
        await send_image(world, user, f"img-vision-{fault}")
        assert [m.content for m in await world.wecom.wait_for_messages(user, 1, timeout=30)] == [APOLOGY]
        assert image_requests(world, image)  # the model was asked, with the image
    finally:
        world.llm.latency_s = 0.0
    await send_text(world, user, "still there?")
    got = await world.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and got[1].content.startswith(f"I see {digest(image)[:16]} | still there?")


async def test_safety_checks_an_image_caption(iw: tuple[World, FakeOfficialAccount]) -> None:
    """A blocked caption is refused like typed text: the model never sees the image."""
    world, _ = iw
    image = png_bytes(20, 20, (77, 77, 77))
    frame = {
        "sender": "bridge-image-blocked",
        "msg_type": "image",
        "content": "这是禁语测试",
        "image_base64": base64.b64encode(image).decode(),
    }
    assert await bridge_exchange(world, frame) == WORD_NOTICE
    assert image_requests(world, image) == []


# -- Official Account ---------------------------------------------------------------------------------


async def post_oa(world: World, inner: str) -> None:
    ts, nonce = str(int(time.time())), "3131"
    params = {"signature": plain_signature(CONFIG["token"], ts, nonce), "timestamp": ts, "nonce": nonce}
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.post(
            "/wechat/callback", params=params, content=inner.encode(), headers={"Content-Type": "text/xml"}
        )
    assert resp.status_code == 200 and resp.text == "success"


def oa_inner(openid: str, msg_type: str, fields: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{fields}"
        f"<MsgId>{next(_OA_MSG_IDS)}</MsgId></xml>"
    )


async def test_an_official_account_image_is_fetched_with_its_own_media_get(
    iw: tuple[World, FakeOfficialAccount],
) -> None:
    world, oa = iw
    openid = "oIMAGE00000000000000000001"
    image = png_bytes(50, 30, (200, 30, 30))
    oa.add_media("oa-img", image, "image/png", "oa.png", "image")
    await post_oa(
        world, oa_inner(openid, "image", "<PicUrl><![CDATA[]]></PicUrl><MediaId><![CDATA[oa-img]]></MediaId>")
    )
    [answer] = await oa.wait_for_messages(openid, 1, timeout=20)
    assert answer.content.startswith(f"I see {digest(image)[:16]} | ")
    assert world.wecom.media("oa-img") is None and oa.media_get_calls >= 1  # the OA's API, not WeCom's


async def test_an_official_account_voice_without_recognition_is_transcribed(
    iw: tuple[World, FakeOfficialAccount],
) -> None:
    world, oa = iw
    openid = "oVOICE00000000000000000001"
    oa.add_media("oa-voice", amr_bytes(1.2, seed=7), "audio/amr", "voice.amr", "voice")
    world.llm.media.say("公众号自己转写的语音")
    await post_oa(
        world, oa_inner(openid, "voice", "<MediaId><![CDATA[oa-voice]]></MediaId><Format><![CDATA[amr]]></Format>")
    )
    [answer] = await oa.wait_for_messages(openid, 1, timeout=20)
    assert answer.content == "LLM says: 公众号自己转写的语音 (saw 2 messages)"
    assert world.llm.media.transcriptions[-1].format == "wav"
    logged_events = await logged(world, EventKind.RECEIVED, conversation_id("wechat", APP_ID, openid))
    [event] = [ev.MessageReceived.FromString(d) for d in logged_events]
    assert event.attributes["wxbot.asr"] == "ok" and event.media.content_type == "audio/amr"


# -- AI bot -------------------------------------------------------------------------------------------


async def aibot_callback(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    ts, nonce = str(int(time.time())), "6160"
    params, body = AIBOT.build_json_callback(json.dumps(payload, ensure_ascii=False), ts, nonce)
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.post("/wecom/aibot/callback", params=params, content=body.encode())
    assert resp.status_code == 200, resp.text
    return json.loads(AIBOT.open_reply_json(resp.text))  # type: ignore[no-any-return]


async def aibot_answer(world: World, sid: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = await aibot_callback(
            world, {"msgid": f"r-{time.monotonic_ns()}", "msgtype": "stream", "stream": {"id": sid}}
        )
        if reply["stream"]["finish"]:
            return str(reply["stream"]["content"])
        await asyncio.sleep(0.2)  # WeCom's refresh interval, not a wait for a condition
    raise AssertionError("the stream never finished")


@pytest.mark.parametrize("shape", ["image", "mixed"])
async def test_an_ai_bot_image_is_decrypted_and_shown_to_the_model(
    iw: tuple[World, FakeOfficialAccount], shape: str
) -> None:
    world, _ = iw
    image = png_bytes(36, 36, (120, 60, 180) if shape == "image" else (60, 180, 120))
    url = world.wecom.serve_file(f"aibot-{shape}", AIBOT.encrypt_media(image), "application/octet-stream")
    payload: dict[str, Any] = {
        "msgid": f"AIBOT-IMG-{shape}",
        "aibotid": "AIBOT-E2E",
        "chattype": "single",
        "from": {"userid": f"aibot-image-{shape}"},
        "msgtype": shape,
    }
    if shape == "image":
        payload["image"] = {"url": url}
    else:
        items = [
            {"msgtype": "text", "text": {"content": "图里有几种颜色"}},
            {"msgtype": "image", "image": {"url": url}},
        ]
        payload["mixed"] = {"msg_item": items}
    first = await aibot_callback(world, payload)
    content = await aibot_answer(world, first["stream"]["id"])
    caption = DESCRIBE_PROMPT[:24] if shape == "image" else "图里有几种颜色"
    assert content.startswith(f"I see {digest(image)[:16]} | {caption}")


# -- bridge -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [False, True])
async def test_a_bridge_image_frame_by_url_or_inline_reaches_the_model(
    iw: tuple[World, FakeOfficialAccount], inline: bool
) -> None:
    world, _ = iw
    image = png_bytes(24, 24, (5, 5, 250) if inline else (250, 5, 5))
    frame: dict[str, str] = {"sender": f"bridge-image-{inline}", "msg_type": "image", "content": "what is this?"}
    if inline:
        frame["image_base64"] = base64.b64encode(image).decode()
    else:
        frame["image_url"] = world.wecom.serve_file("bridge.png", image, "image/png")
    assert (await bridge_exchange(world, frame)).startswith(f"I see {digest(image)[:16]} | what is this?")


async def bridge_exchange(world: World, frame: dict[str, str]) -> str:
    """Send one frame on a new socket; the reply's content, after exactly one ack."""
    kinds, content = await bridge_until_reply(world, BRIDGE_TOKEN, frame)
    assert kinds == ["ack", "reply"]
    return content
