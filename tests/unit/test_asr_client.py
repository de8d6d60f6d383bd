"""The transcription client against the fake OpenAI-compatible server: the text, or one reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.media.asr import AsrError, Transcriber
from wxbot_common.media.settings import MediaEndpoint
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.media_files import amr_bytes, wav_bytes

pytestmark = pytest.mark.timeout(30)
KEY = "sk-asr"


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(api_key=KEY)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[TracedHttp]:
    async with TracedHttp(create_session(4, 5.0)) as client:
        yield client


def transcriber(http: TracedHttp, llm: FakeLLM, key: str = KEY) -> Transcriber:
    return Transcriber(http, MediaEndpoint(f"{llm.base_url}/v1", key, "whisper-1"))


async def test_the_transcript_of_a_wav(llm: FakeLLM, http: TracedHttp) -> None:
    llm.media.say(" 你好 ")
    assert await transcriber(http, llm).transcribe(wav_bytes(1.0)) == "你好"
    [sent] = llm.media.transcriptions
    assert (sent.model, sent.filename, sent.format) == ("whisper-1", "voice.wav", "wav")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("503", "unavailable"),
        ("429", "unavailable"),
        ("bad key", "rejected"),
        ("amr", "rejected"),
        ("silence", "empty"),
    ],
)
async def test_each_failure_has_its_reason(llm: FakeLLM, http: TracedHttp, case: str, reason: str) -> None:
    audio, key = wav_bytes(1.0), KEY
    if case in ("503", "429"):
        llm.media.fail_next("transcriptions", int(case))
    elif case == "bad key":
        key = "sk-wrong"
    elif case == "amr":
        audio = amr_bytes(1.0)  # Whisper takes no AMR: the gateway converts first
    else:
        llm.media.say("")
    with pytest.raises(AsrError) as caught:
        await transcriber(http, llm, key).transcribe(audio)
    assert caught.value.reason == reason


async def test_an_unreachable_endpoint_is_unavailable(http: TracedHttp) -> None:
    endpoint = MediaEndpoint("http://127.0.0.1:9/v1", "", "whisper-1")
    with pytest.raises(AsrError) as caught:
        await Transcriber(http, endpoint).transcribe(wav_bytes(1.0))
    assert caught.value.reason == "unavailable"
