"""Images and voice out (issue 14, items 4–6): "画一只猫", /draw and the model's draw_image tool make an
image that is uploaded and sent as an image message, once; voice answers go as AMR voice messages
after the text; every failure ends in one notice or in the text alone.

Real NATS, Redis, services and ffmpeg; the fake LLM's image and speech endpoints, the fake WeCom
and Official Account APIs with their strict media/upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.harness import CONFIG, World, llm_reply, logged, running_world, send_text, send_voice
from tests.e2e.test_oa import APP_ID, APP_SECRET, GH_ID, TOKEN, inner_text, plain_params, post
from tests.e2e.test_ws_bridge import frames_until
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.llm import ChatRequest, ToolCall
from wxbot_devkit.fakes.media_files import amr_bytes, amr_duration_s, png_bytes, sniff
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_devkit.otlp_sink import SpanRecord
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_gateway.media_send import MEDIA_FAILED_NOTICE, NO_MEDIA_NOTICE
from wxbot_nlp.drawing import DRAW_APOLOGY, DRAW_TOO_LARGE, DRAW_USAGE
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.policy import OUTPUT_NOTICE, WORD_NOTICE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

IMAGE_DEADLINE_S = 3.0
IMAGE_MAX_BYTES = 4_000_000
WECOM_IMAGE_LIMIT = 2 * 1024 * 1024
BRIDGE_TOKEN = "media-bridge-token"
TOOL_ANSWER = "这是你要的图。(Here is your picture.)"


def replies(request: ChatRequest) -> str | list[ToolCall]:
    """`tool-draw <prompt>`: the model calls draw_image, then answers in text; `tool-draw-listed`:
    the model itself writes a prompt holding a listed term."""
    last = request.last_user_message
    if last == "tool-draw-listed":
        last = "tool-draw 一幅禁语测试的画"
    if last.startswith("tool-draw "):
        if request.tool_results:
            return TOOL_ANSWER
        return [ToolCall("draw_image", {"prompt": last.removeprefix("tool-draw ")})]
    return llm_reply(request)


@pytest.fixture(scope="module")
async def mo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[World, FakeOfficialAccount]]:
    lexicon = tmp_path_factory.mktemp("lexicon") / "terms.txt"
    lexicon.write_text("禁语测试\n", encoding="utf-8")
    api = FakeOfficialAccount(APP_ID, APP_SECRET)
    await api.start()
    env = {
        "SAFETY_WORDLIST_FILES": str(lexicon),
        "IMAGE_TOOL": "true",
        "IMAGE_DEADLINE_S": str(IMAGE_DEADLINE_S),
        "IMAGE_MAX_BYTES": str(IMAGE_MAX_BYTES),
        "VOICE_REPLY": "when_spoken",
        "GATEWAY_RETRY_BASE_S": "0.2",
        "GATEWAY_DELIVERY_HOLD_S": "0",  # a failed send is handed back to JetStream: a real redelivery
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "WECHAT_API_BASE": api.base_url,
    }
    try:
        async with running_world(Path(tmp_path_factory.mktemp("media-out")), env, reply=replies) as world:
            yield world, api
    finally:
        await api.stop()


def unique_image(world: World, seed: int) -> bytes:
    """The image the fake generates next: its own colour, so its digest (and upload) is this test's."""
    image = png_bytes(96, 64, (seed * 37 % 256, seed * 91 % 256, 200))
    world.llm.media.image_bytes = image
    return image


def noise_png(side: int) -> bytes:
    """A PNG of random pixels (incompressible): 1100 px ≈ 3.5 MB, 1500 px ≈ 6.5 MB."""
    source = f"color=c=gray:s={side}x{side},noise=alls=100:allf=t"
    argv = [Ffmpeg.locate().exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source]
    return subprocess.run(
        [*argv, "-frames:v", "1", "-c:v", "png", "-f", "image2pipe", "-"], capture_output=True, check=True
    ).stdout


async def approved(world: World, user: str) -> list[ev.ReplyApproved]:
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    return [ev.ReplyApproved.FromString(d) for d in await logged(world, EventKind.APPROVED, conversation)]


async def settled(world: World, user: str, count: int) -> list[str]:
    """Send a plain question after the test's message; its answer arriving proves nothing more came
    before it (replies go in order): the kinds of every message the user got."""
    await send_text(world, user, "anything else?")
    got = await world.wecom.wait_for_messages(user, count + 1, timeout=30)
    assert got[-1].content.startswith("LLM says: anything else?"), [m.msgtype for m in got]
    return [m.msgtype for m in got[:-1]]


async def test_draw_a_cat_generates_uploads_and_sends_an_image(mo: tuple[World, FakeOfficialAccount]) -> None:
    """The issue's Done-when: the image endpoint receives the prompt, the fake WeCom a media/upload
    of type image and then a message/send with msgtype image and that media_id."""
    world, _ = mo
    user = "e2e-draw-cat"
    image = unique_image(world, 1)
    asked = len(world.llm.media.image_requests)
    resp, _ = await send_text(world, user, "画一只猫")
    assert resp.status_code == 200

    [sent] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert sent.msgtype == "image"
    prompts = [r.prompt for r in world.llm.media.image_requests[asked:]]
    assert prompts == ["一只猫"]
    [uploaded] = [u for u in world.wecom.uploads if u.sha256 == hashlib.sha256(image).hexdigest()]
    assert uploaded.media_type == "image" and uploaded.media_id == sent.media_id
    assert uploaded.filename.endswith(".png")
    assert not any("画一只猫" in r.last_user_message for r in world.llm.requests)  # no chat call

    # The log carries a reference with the prompt, never the bytes; context remembers what was sent.
    [reply] = await approved(world, user)
    assert reply.text == "" and [m.caption for m in reply.media] == ["一只猫"]
    assert reply.media[0].content_type == "image/png" and len(reply.SerializeToString()) < 1_000
    assert await settled(world, user, 1) == ["image"]
    assert any(
        r.last_user_message == "anything else?" and any(m.get("content") == "[image: 一只猫]" for m in r.messages)
        for r in world.llm.requests
    )

    def drawn(spans: list[SpanRecord]) -> SpanRecord | None:
        return next(
            (s for s in spans if s.name == "image.generate" and s.attributes.get("wxbot.media.outcome") == "ok"), None
        )

    step = await world.sink.wait_for(drawn, timeout=20)
    assert step.service_name == "nlp"


async def test_the_draw_command_and_its_usage(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-draw-command"
    unique_image(world, 2)
    asked = len(world.llm.media.image_requests)
    await send_text(world, user, "/draw")
    [usage] = await world.wecom.wait_for_messages(user, 1, timeout=20)
    assert usage.content == DRAW_USAGE and len(world.llm.media.image_requests) == asked
    await send_text(world, user, "/draw a lighthouse at dusk")
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[1].msgtype == "image"
    assert world.llm.media.image_requests[-1].prompt == "a lighthouse at dusk"
    assert world.llm.media.image_requests[-1].model == "dall-e-3"  # IMAGE_MODEL's default; answered by url


async def test_a_blocked_prompt_generates_and_sends_nothing(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-draw-blocked"
    asked, uploads = len(world.llm.media.image_requests), len(world.wecom.uploads)
    await send_text(world, user, "画一只禁语测试")
    [notice] = await world.wecom.wait_for_messages(user, 1, timeout=20)
    assert notice.content == WORD_NOTICE
    assert await settled(world, user, 1) == ["text"]
    assert len(world.llm.media.image_requests) == asked and len(world.wecom.uploads) == uploads


async def test_the_model_draws_with_the_tool_text_then_image(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-draw-tool"
    image = unique_image(world, 3)
    await send_text(world, user, "tool-draw a red fox in snow")
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    assert [m.msgtype for m in got] == ["text", "image"] and got[0].content == TOOL_ANSWER
    assert world.llm.media.image_requests[-1].prompt == "a red fox in snow"
    offered = next(r for r in world.llm.requests if r.last_user_message == "tool-draw a red fox in snow")
    assert "draw_image" in offered.tools
    [uploaded] = [u for u in world.wecom.uploads if u.sha256 == hashlib.sha256(image).hexdigest()]
    assert uploaded.media_id == got[1].media_id
    assert await settled(world, user, 2) == ["text", "image"]


async def test_a_model_prompt_safety_blocks_is_not_sent(mo: tuple[World, FakeOfficialAccount]) -> None:
    """The model wrote the prompt, so safety sees it only in the draft: the image was made, it is not sent."""
    world, _ = mo
    user = "e2e-draw-tool-blocked"
    unique_image(world, 4)
    uploads = len(world.wecom.uploads)
    asked = len(world.llm.media.image_requests)
    await send_text(world, user, "tool-draw-listed")
    [notice] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert notice.content == OUTPUT_NOTICE
    assert await settled(world, user, 1) == ["text"]
    assert len(world.wecom.uploads) == uploads
    assert [r.prompt for r in world.llm.media.image_requests[asked:]] == ["一幅禁语测试的画"]


@pytest.mark.parametrize("fault", ["down", "slow", "html"])
async def test_an_image_endpoint_down_slow_or_answering_html_gets_one_apology(
    mo: tuple[World, FakeOfficialAccount], fault: str
) -> None:
    world, _ = mo
    user = f"e2e-draw-{fault}"
    uploads = len(world.wecom.uploads)
    if fault == "down":
        world.llm.media.fail_next("images", 503)
    elif fault == "slow":
        world.llm.media.latency_s = IMAGE_DEADLINE_S + 1
    else:  # the image URL answers a login page
        world.llm.media.image_bytes = b"<!doctype html><html><body>please log in</body></html>"
    try:
        await send_text(world, user, "画一只猫")
        [apology] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    finally:
        world.llm.media.latency_s = 0.0
    assert apology.content == DRAW_APOLOGY
    assert await settled(world, user, 1) == ["text"]
    assert len(world.wecom.uploads) == uploads


async def test_a_large_image_is_recompressed_and_one_too_large_gets_an_apology(
    mo: tuple[World, FakeOfficialAccount],
) -> None:
    world, _ = mo
    user = "e2e-draw-large"
    world.llm.media.image_bytes = noise_png(1100)
    assert WECOM_IMAGE_LIMIT < len(world.llm.media.image_bytes) < IMAGE_MAX_BYTES
    await send_text(world, user, "画一幅噪点图")
    [sent] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert sent.msgtype == "image"
    uploaded = next(u for u in world.wecom.uploads if u.media_id == sent.media_id)
    assert sniff(uploaded.data) == "jpeg" and len(uploaded.data) <= WECOM_IMAGE_LIMIT

    world.llm.media.image_bytes = noise_png(1500)  # over IMAGE_MAX_BYTES: refused while downloading
    await send_text(world, user, "画一幅更大的噪点图")
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[1].content == DRAW_TOO_LARGE
    assert await settled(world, user, 2) == ["image", "text"]


async def test_upload_errors_are_retried_and_a_redelivery_sends_the_image_once(
    mo: tuple[World, FakeOfficialAccount],
) -> None:
    """Busy and rate-limited uploads are retried; a send that fails after its upload is retried with
    the same media id; a redelivered reply sends neither its text nor its image again."""
    world, _ = mo
    user = "e2e-draw-retry"
    image = unique_image(world, 5)
    digest = hashlib.sha256(image).hexdigest()
    calls = world.wecom.upload_calls
    world.wecom.fail_next_uploads(-1, 45009)
    world.wecom.fail_next_sends(-1)  # the image message, after the upload that finally worked
    await send_text(world, user, "画一只会飞的猫")
    [sent] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert sent.msgtype == "image" and world.wecom.upload_calls == calls + 3
    assert len([u for u in world.wecom.uploads if u.sha256 == digest]) == 1

    # Text, then an image whose upload fails: JetStream redelivers; the text part is not sent again.
    image = unique_image(world, 6)
    digest = hashlib.sha256(image).hexdigest()
    world.wecom.fail_next_uploads(-1)
    await send_text(world, user, "tool-draw a flying dog")
    got = await world.wecom.wait_for_messages(user, 3, timeout=30)
    assert [m.msgtype for m in got[1:]] == ["text", "image"]
    assert await settled(world, user, 3) == ["image", "text", "image"]
    assert len([u for u in world.wecom.uploads if u.sha256 == digest]) == 1


async def test_an_image_wecom_refuses_becomes_one_notice_and_text_still_goes(
    mo: tuple[World, FakeOfficialAccount],
) -> None:
    """A content errcode on upload (40009: image too large for WeCom) is not retried: an image alone
    is replaced by one notice; beside text, it is left out."""
    world, _ = mo
    user = "e2e-draw-refused"
    unique_image(world, 11)
    calls = world.wecom.upload_calls
    world.wecom.fail_next_uploads(40009)
    await send_text(world, user, "画一只被拒绝的猫")
    [notice] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert notice.content == MEDIA_FAILED_NOTICE and world.wecom.upload_calls == calls + 1

    unique_image(world, 12)
    world.wecom.fail_next_uploads(40009)
    await send_text(world, user, "tool-draw a refused cat")
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[1].content == TOOL_ANSWER
    assert await settled(world, user, 2) == ["text", "text"]


async def test_a_media_id_older_than_three_days_is_uploaded_again(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-draw-expired"
    image = unique_image(world, 7)
    digest = hashlib.sha256(image).hexdigest()
    await send_text(world, user, "画一只橘猫")
    await world.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(world, user, "画一只橘猫")  # the same image again: its media id is reused
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[0].media_id == got[1].media_id
    assert len([u for u in world.wecom.uploads if u.sha256 == digest]) == 1
    world.wecom.advance_media_clock(3 * 86400)  # WeCom forgets it: 40007 on send
    await send_text(world, user, "画一只橘猫")
    got = await world.wecom.wait_for_messages(user, 3, timeout=30)
    ours = [u for u in world.wecom.uploads if u.sha256 == digest]
    assert len(ours) == 2 and got[2].msgtype == "image" and got[2].media_id == ours[1].media_id
    assert await settled(world, user, 3) == ["image", "image", "image"]


async def test_an_official_account_gets_its_own_upload_and_image_message(
    mo: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = mo
    openid = "oDRAWINGUSER00000000000000"
    image = unique_image(world, 8)
    await send_text(world, "e2e-draw-oa-wecom", "画一只海豚")  # the same image through the WeCom app first
    await world.wecom.wait_for_messages("e2e-draw-oa-wecom", 1, timeout=30)
    resp = await post(world, plain_params(), inner_text(openid, "画一只海豚", 26_000_000_000_000_001))
    assert resp.status_code == 200
    [sent] = await api.wait_for_messages(openid, 1, timeout=30)
    [uploaded] = [u for u in api.uploads if u.sha256 == hashlib.sha256(image).hexdigest()]
    assert sent.msgtype == "image" and sent.media_id == uploaded.media_id and uploaded.media_type == "image"


async def test_a_voice_message_is_answered_in_text_then_voice(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-voice-out"
    world.wecom.add_media("voice-out", amr_bytes(1.2, seed=5), "audio/amr", "voice.amr", "voice")
    world.llm.media.say("讲个笑话")
    spoken = len(world.llm.media.speeches)
    await send_voice(world, user, "voice-out")
    got = await world.wecom.wait_for_messages(user, 2, timeout=30)
    answer = "LLM says: 讲个笑话 (saw 2 messages)"
    assert [m.msgtype for m in got] == ["text", "voice"] and got[0].content == answer
    [speech] = world.llm.media.speeches[spoken:]
    assert speech.input == answer and speech.response_format == "wav" and speech.voice == "alloy"
    uploaded = next(u for u in world.wecom.uploads if u.media_id == got[1].media_id)
    duration = amr_duration_s(uploaded.data)
    assert uploaded.media_type == "voice" and sniff(uploaded.data) == "amr" and duration is not None
    assert abs(duration - len(answer) * 0.2) < 0.5  # the fake speaks five characters a second

    # Typed text is not spoken under when_spoken.
    assert await settled(world, user, 2) == ["text", "voice"]
    assert len(world.llm.media.speeches) == spoken + 1


async def test_an_official_account_voice_message_is_answered_in_text_then_voice(
    mo: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = mo
    openid = "oVOICEOUTUSER0000000000000"
    inner = (
        f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
        "<MediaId><![CDATA[oa-voice]]></MediaId><Format><![CDATA[amr]]></Format>"
        "<Recognition><![CDATA[公众号语音]]></Recognition><MsgId>26000000000000002</MsgId></xml>"
    )
    resp = await post(world, plain_params(), inner)
    assert resp.status_code == 200
    got = await api.wait_for_messages(openid, 2, timeout=30)
    assert [m.msgtype for m in got] == ["text", "voice"] and got[0].content == "LLM says: 公众号语音 (saw 2 messages)"
    uploaded = next(u for u in api.uploads if u.media_id == got[1].media_id)
    assert uploaded.media_type == "voice" and sniff(uploaded.data) == "amr"


async def test_tts_down_still_sends_the_text(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    user = "e2e-voice-tts-down"
    world.wecom.add_media("voice-tts-down", amr_bytes(1.0, seed=6), "audio/amr", "voice.amr", "voice")
    world.llm.media.say("今天星期几")
    world.llm.media.fail_next("speech", 503)
    await send_voice(world, user, "voice-tts-down")
    [text] = await world.wecom.wait_for_messages(user, 1, timeout=30)
    assert text.content == "LLM says: 今天星期几 (saw 2 messages)"
    assert await settled(world, user, 1) == ["text"]


async def media_outcomes(world: World) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        urls = world.stack.service_urls()["nlp"]
        return "\n".join([(await client.get(f"{u}/metrics")).text for u in urls])


async def test_media_steps_are_counted(mo: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = mo
    unique_image(world, 9)
    await send_text(world, "e2e-draw-metrics", "画一棵树")
    await world.wecom.wait_for_messages("e2e-draw-metrics", 1, timeout=30)
    metrics = await media_outcomes(world)
    assert 'wxbot_nlp_media_total{kind="image",outcome="ok"}' in metrics
    assert 'wxbot_nlp_media_step_seconds_count{kind="image",step="generate"}' in metrics


@pytest.fixture(scope="module")
async def always(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    # gpt-image answers b64_json; the bridge is a channel without media messages.
    env = {"VOICE_REPLY": "always", "IMAGE_MODEL": "gpt-image-1", "GATEWAY_BRIDGE_TOKEN": BRIDGE_TOKEN}
    async with running_world(Path(tmp_path_factory.mktemp("voice-always")), env) as world:
        yield world


async def test_voice_always_speaks_typed_answers_and_b64_images_are_taken(always: World) -> None:
    user = "e2e-voice-always"
    await send_text(always, user, "你好")
    got = await always.wecom.wait_for_messages(user, 2, timeout=30)
    assert [m.msgtype for m in got] == ["text", "voice"]
    assert always.llm.media.speeches[-1].input == got[0].content

    image = unique_image(always, 10)
    await send_text(always, user, "/draw a paper boat")
    got = await always.wecom.wait_for_messages(user, 3, timeout=30)
    assert got[2].msgtype == "image"  # an image reply has no text: nothing to speak
    assert always.llm.media.image_requests[-1].response_format == "b64_json"
    assert next(u for u in always.wecom.uploads if u.media_id == got[2].media_id).data == image


async def test_a_channel_without_media_messages_gets_a_notice_instead_of_an_image(always: World) -> None:
    """The bridge sends text frames only: an image-only answer becomes one plain notice, a spoken
    answer its text alone (docs/media.md: what each channel gets)."""
    url = always.stack.gateway_url.replace("http://", "ws://") + "/ws/bridge"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {BRIDGE_TOKEN}"}) as ws:
        await ws.send(json.dumps({"sender": "bridge-drawer", "content": "画一只猫", "msg_id": "m1"}))
        reply = await asyncio.wait_for(frames_until(ws, "reply"), 30)
        assert reply["content"] == NO_MEDIA_NOTICE
        await ws.send(json.dumps({"sender": "bridge-drawer", "content": "hello", "msg_id": "m2"}))
        reply = await asyncio.wait_for(frames_until(ws, "reply"), 30)
        assert reply["content"].startswith("LLM says: hello")
