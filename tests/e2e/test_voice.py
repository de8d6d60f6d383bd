"""Voice in (issue 14, item 2): a WeCom voice message is downloaded, converted, transcribed, checked
by safety, answered like typed text and remembered; bad voice gets one plain notice."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    CONFIG,
    World,
    bridge_until_reply,
    counter_by_label,
    logged,
    running_world,
    send_text,
    send_voice,
)
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.media_files import amr_bytes
from wxbot_devkit.otlp_sink import SpanRecord
from wxbot_gateway.conversation import conversation_id
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_nlp.drafting import VOICE_NOTICE
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.policy import WORD_NOTICE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEADLINE_S = 2.0
BRIDGE_TOKEN = "voice-bridge-token"


@pytest.fixture(scope="module")
async def vw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    lexicon = tmp_path_factory.mktemp("lexicon") / "terms.txt"
    lexicon.write_text("禁语测试\n", encoding="utf-8")
    env = {
        "SAFETY_WORDLIST_FILES": str(lexicon),
        "VOICE_DEADLINE_S": str(DEADLINE_S),
        "GATEWAY_BRIDGE_TOKEN": BRIDGE_TOKEN,
    }
    async with running_world(Path(tmp_path_factory.mktemp("voice")), env) as world:
        yield world


def asked(world: World, text: str) -> bool:
    return any(text in r.last_user_message for r in world.llm.requests)


async def voice_outcomes(world: World) -> dict[str, float]:
    """`wxbot_gateway_voice_total` by outcome, over the gateway replicas."""
    return await counter_by_label(world, "gateway", "wxbot_gateway_voice_total", "outcome")


async def received(world: World, user: str) -> list[ev.MessageReceived]:
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    return [ev.MessageReceived.FromString(d) for d in await logged(world, EventKind.RECEIVED, conversation)]


async def test_a_voice_message_is_transcribed_answered_and_remembered(vw: World) -> None:
    user = "e2e-voice-ok"
    amr = amr_bytes(1.5, seed=1)
    vw.wecom.add_media("voice-ok", amr, "audio/amr", "voice.amr", "voice")
    vw.llm.media.say("明天北京天气怎么样")
    resp, msg_id = await send_voice(vw, user, "voice-ok")
    assert resp.status_code == 200 and resp.content == b""

    got = await vw.wecom.wait_for_messages(user, 1, timeout=20)
    assert [m.content for m in got] == ["LLM says: 明天北京天气怎么样 (saw 2 messages)"]
    heard = vw.llm.media.transcriptions[-1]
    assert heard.format == "wav" and heard.model == "whisper-1" and len(heard.data) > 40_000  # 1.5 s, 16 kHz

    # The log holds the transcript and a reference to the stored AMR, never the bytes.
    [event] = await received(vw, user)
    assert event.kind == ev.MESSAGE_KIND_VOICE and event.text == "明天北京天气怎么样"
    assert event.media.sha256 == hashlib.sha256(amr).hexdigest() and event.media.size == len(amr)
    assert event.media.content_type == "audio/amr" and len(event.SerializeToString()) < 2_000

    # Spans: the voice step, with the download and the transcription as its children, in the message's trace.
    def voice_trace(spans: list[SpanRecord]) -> list[SpanRecord] | None:
        step = next(
            (s for s in spans if s.name == "voice.transcribe" and s.attributes.get("wxbot.voice.outcome") == "ok"), None
        )
        if step is None:
            return None
        children = [s for s in spans if s.parent_span_id == step.span_id and s.kind == "CLIENT"]
        urls = " ".join(str(s.attributes.get("url.full")) for s in children)
        return children if "media/get" in urls and "audio/transcriptions" in urls else None

    assert await vw.sink.wait_for(voice_trace, timeout=20)

    # WeCom's retry of the same MsgId: neither transcribed again nor answered again.
    transcribed = len(vw.llm.media.transcriptions)
    again, _ = await send_voice(vw, user, "voice-ok", msg_id=msg_id)
    assert again.status_code == 200 and len(vw.llm.media.transcriptions) == transcribed

    # Recorded in the conversation: the next question sees the transcript as the user's turn.
    await send_text(vw, user, "那后天呢？")
    got = await vw.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and got[1].content.startswith("LLM says: 那后天呢？")
    follow_up = next(r for r in vw.llm.requests if r.last_user_message == "那后天呢？")
    assert [str(m.get("content")) for m in follow_up.messages][1] == "明天北京天气怎么样"


async def test_safety_checks_the_transcript(vw: World) -> None:
    user = "e2e-voice-word"
    vw.wecom.add_media("voice-word", amr_bytes(1.0, seed=2), "audio/amr", "voice.amr", "voice")
    vw.llm.media.say("这是禁语测试吗")
    await send_voice(vw, user, "voice-word")
    assert [m.content for m in await vw.wecom.wait_for_messages(user, 1, timeout=20)] == [WORD_NOTICE]
    assert not asked(vw, "禁语测试")


@pytest.mark.parametrize(
    ("case", "media", "reason"),
    [
        ("corrupt", b"#!AMR\n" + bytes(range(256)) * 8, "corrupt"),
        ("empty", b"", "empty"),
        ("too-large", b"#!AMR\n" + bytes(2_200_000), "too_large"),  # over VOICE_MAX_BYTES (2 MiB)
        ("json-error", None, "download"),  # an unknown MediaId: media/get answers errcode 40007 with HTTP 200
    ],
)
async def test_bad_voice_gets_one_notice_and_no_llm_call(
    vw: World, case: str, media: bytes | None, reason: str
) -> None:
    user = f"e2e-voice-{case}"
    before = (await voice_outcomes(vw)).get(reason, 0.0)
    if media is not None:
        vw.wecom.add_media(f"voice-{case}", media, "audio/amr", "voice.amr", "voice")
    transcribed = len(vw.llm.media.transcriptions)
    await send_voice(vw, user, f"voice-{case}")
    assert [m.content for m in await vw.wecom.wait_for_messages(user, 1, timeout=20)] == [VOICE_NOTICE]
    await send_text(vw, user, f"after the {case} voice")  # a later answer proves no second reply came
    got = await vw.wecom.wait_for_messages(user, 2, timeout=20)
    assert len(got) == 2 and got[0].content == VOICE_NOTICE
    assert got[1].content.startswith(f"LLM says: after the {case} voice")
    assert len(vw.llm.media.transcriptions) == transcribed
    assert (await voice_outcomes(vw)).get(reason, 0.0) == before + 1


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_an_asr_endpoint_down_or_slow_gets_one_notice(vw: World, fault: str) -> None:
    user = f"e2e-voice-asr-{fault}"
    reason = "unavailable" if fault == "down" else "timeout"
    before = (await voice_outcomes(vw)).get(reason, 0.0)
    vw.wecom.add_media(f"voice-asr-{fault}", amr_bytes(1.0, seed=3), "audio/amr", "voice.amr", "voice")
    if fault == "down":
        vw.llm.media.fail_next("transcriptions", 503)
    else:
        vw.llm.media.latency_s = DEADLINE_S + 1
    try:
        resp, _ = await send_voice(vw, user, f"voice-asr-{fault}")
        assert resp.status_code == 200
        assert [m.content for m in await vw.wecom.wait_for_messages(user, 1, timeout=20)] == [VOICE_NOTICE]
    finally:
        vw.llm.media.latency_s = 0.0
    await send_text(vw, user, "still there?")
    got = await vw.wecom.wait_for_messages(user, 2, timeout=20)
    assert [m.content for m in got][1].startswith("LLM says: still there?")
    assert len(got) == 2
    assert (await voice_outcomes(vw)).get(reason, 0.0) == before + 1


async def bridge_voice(world: World, sender: str, audio: bytes) -> tuple[list[str], str]:
    """Send a bridge voice frame; the frame types answered and the reply's text."""
    frame = {"sender": sender, "msg_type": "voice", "voice_base64": base64.b64encode(audio).decode()}
    return await bridge_until_reply(world, BRIDGE_TOKEN, frame)


async def test_a_bridge_voice_frame_is_transcribed_and_answered_like_typed_text(vw: World) -> None:
    """The playground's (and any bridge client's) voice: inline audio, transcribed before the ack."""
    sender = "bridge-voice"
    amr = amr_bytes(1.2, seed=7)
    vw.llm.media.say("桥接的语音消息")
    kinds, reply = await bridge_voice(vw, sender, amr)
    assert kinds == ["ack", "reply"]
    assert reply == "LLM says: 桥接的语音消息 (saw 2 messages)"
    assert vw.llm.media.transcriptions[-1].format == "wav"
    conversation = conversation_id("bridge", "ws", sender)
    (event,) = [ev.MessageReceived.FromString(d) for d in await logged(vw, EventKind.RECEIVED, conversation)]
    assert event.kind == ev.MESSAGE_KIND_VOICE and event.text == "桥接的语音消息"
    assert event.media.sha256 == hashlib.sha256(amr).hexdigest() and event.media.content_type == "audio/amr"


async def test_a_bridge_voice_frame_that_is_not_audio_gets_one_voice_notice(vw: World) -> None:
    heard = len(vw.llm.media.transcriptions)
    kinds, reply = await bridge_voice(vw, "bridge-voice-bad", b"<html>not audio at all</html>" * 4)
    assert kinds == ["ack", "reply"] and reply == VOICE_NOTICE
    assert len(vw.llm.media.transcriptions) == heard  # nothing was sent to the ASR endpoint
