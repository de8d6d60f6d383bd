"""The fake LLM's media endpoints over real HTTP: transcriptions, speech, image generation (url and
b64_json) and image_url parts in chat requests, with OpenAI's refusals and the fault knobs."""

from __future__ import annotations

import base64
import io
import time
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.media_files import amr_bytes, png_bytes, sniff, wav_bytes

pytestmark = pytest.mark.timeout(30)

API_KEY = "sk-media"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
async def llm_server() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(API_KEY) as fake:
        yield fake


@pytest.fixture
async def llm(llm_server: FakeLLM) -> FakeLLM:
    llm_server.reset()
    return llm_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, headers=AUTH) as client:
        yield client


async def transcribe(
    http: httpx.AsyncClient, llm: FakeLLM, data: bytes, filename: str = "voice.wav", **fields: str
) -> httpx.Response:
    return await http.post(
        f"{llm.base_url}/v1/audio/transcriptions",
        data={"model": "whisper-1", **fields},
        files={"file": (filename, data, "audio/wav")},
    )


async def test_transcription_answers_the_script_and_records_the_audio(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    audio = wav_bytes(1.0)
    resp = await transcribe(http, llm, audio, language="zh")
    assert resp.status_code == 200 and resp.json() == {"text": "你好，这是一段语音。"}
    llm.media.say("明天北京天气怎么样")
    assert (await transcribe(http, llm, audio, response_format="text")).text == "明天北京天气怎么样"
    verbose = (await transcribe(http, llm, audio, response_format="verbose_json")).json()
    assert verbose["text"] == "明天北京天气怎么样" and verbose["duration"] == pytest.approx(1.0)
    first, *_ = await llm.media.wait_for_transcriptions(3)
    assert (first.model, first.filename, first.format, first.data) == ("whisper-1", "voice.wav", "wav", audio)
    assert first.fields["language"] == "zh"


async def test_transcription_refuses_what_whisper_refuses(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    amr = await transcribe(http, llm, amr_bytes(1.0), "voice.amr")
    assert amr.status_code == 400 and "Invalid file format" in amr.json()["error"]["message"]
    disguised = await transcribe(http, llm, amr_bytes(1.0), "voice.wav")  # the name does not make it WAV
    assert disguised.status_code == 400
    short = await transcribe(http, llm, wav_bytes(0.05))
    assert short.status_code == 400 and short.json()["error"]["code"] == "audio_too_short"
    missing_file = await http.post(f"{llm.base_url}/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert missing_file.status_code == 400
    no_model = await http.post(
        f"{llm.base_url}/v1/audio/transcriptions", files={"file": ("v.wav", wav_bytes(0.5), "audio/wav")}
    )
    assert no_model.status_code == 400 and "model" in no_model.json()["error"]["message"]
    async with httpx.AsyncClient() as anonymous:
        unauthorized = await anonymous.post(
            f"{llm.base_url}/v1/audio/transcriptions", files={"file": ("v.wav", wav_bytes(0.5), "audio/wav")}
        )
    assert unauthorized.status_code == 401


async def test_transcription_faults_and_latency(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    llm.media.fail_next("transcriptions", 503, 429)
    assert (await transcribe(http, llm, wav_bytes(0.5))).status_code == 503
    limited = await transcribe(http, llm, wav_bytes(0.5))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert (await transcribe(http, llm, wav_bytes(0.5))).status_code == 200
    await http.post(f"{llm.base_url}/_fake/faults", json={"media_latency_s": 0.3, "transcript": "慢"})
    started = time.monotonic()
    assert (await transcribe(http, llm, wav_bytes(0.5))).json() == {"text": "慢"}
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ValueError, match="endpoint must be one of"):
        llm.media.fail_next("transcribe", 500)


async def test_speech_returns_real_audio_of_the_text(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    body = {"model": "tts-1", "input": "你好，我是机器人", "voice": "alloy", "response_format": "wav"}
    resp = await http.post(f"{llm.base_url}/v1/audio/speech", json=body)
    assert resp.status_code == 200 and resp.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(resp.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 24000)
        assert audio.getnframes() / audio.getframerate() == pytest.approx(8 * 0.2)
    pcm = await http.post(f"{llm.base_url}/v1/audio/speech", json={**body, "response_format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm" and len(pcm.content) == len(resp.content) - 44
    [first, _] = await llm.media.wait_for_speeches(2)
    assert (first.model, first.input, first.voice, first.response_format) == ("tts-1", body["input"], "alloy", "wav")


async def test_speech_refusals(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    url = f"{llm.base_url}/v1/audio/speech"
    base = {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "wav"}
    assert (await http.post(url, json={**base, "input": ""})).status_code == 400
    assert (await http.post(url, json={**base, "input": "x" * 4097})).status_code == 400
    assert (await http.post(url, json={k: v for k, v in base.items() if k != "voice"})).status_code == 400
    mp3 = await http.post(url, json={k: v for k, v in base.items() if k != "response_format"})
    assert mp3.status_code == 400 and "'wav' or 'pcm'" in mp3.json()["error"]["message"]
    llm.media.fail_next("speech", 500)
    assert (await http.post(url, json=base)).status_code == 500


async def generate(http: httpx.AsyncClient, llm: FakeLLM, **body: Any) -> httpx.Response:
    return await http.post(f"{llm.base_url}/v1/images/generations", json={"prompt": "一只猫", **body})


async def test_image_generation_as_url_served_by_the_fake(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    resp = await generate(http, llm, model="dall-e-3", size="1024x1024")
    assert resp.status_code == 200
    [item] = resp.json()["data"]
    assert item["revised_prompt"] == "一只猫"
    image = await http.get(item["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and sniff(image.content) == "png"
    assert image.content[16:24] == (1024).to_bytes(4, "big") * 2  # the asked size
    [request] = await llm.media.wait_for_images()
    assert (request.prompt, request.model, request.response_format) == ("一只猫", "dall-e-3", "url")


async def test_image_generation_as_b64_json(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    explicit = await generate(http, llm, model="dall-e-2", size="256x256", response_format="b64_json", n=2)
    assert [sniff(base64.b64decode(d["b64_json"])) for d in explicit.json()["data"]] == ["png", "png"]
    gpt_image = (await generate(http, llm, model="gpt-image-1")).json()["data"][0]
    assert set(gpt_image) == {"b64_json"}  # gpt-image models answer base64 only
    llm.media.image_bytes = big = png_bytes(8, 8) + b"\x00" * 3_000_000  # a knob: a too-large result
    got = (await generate(http, llm, model="dall-e-2", response_format="b64_json")).json()["data"][0]
    assert base64.b64decode(got["b64_json"]) == big


async def test_image_generation_refusals_and_faults(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    assert (await generate(http, llm, prompt="")).status_code == 400
    assert (await generate(http, llm, model="dall-e-2", prompt="x" * 1001)).status_code == 400
    assert (await generate(http, llm, model="dall-e-3", n=2)).status_code == 400
    assert (await generate(http, llm, model="dall-e-3", size="256x256")).status_code == 400
    assert (await generate(http, llm, response_format="webp")).status_code == 400
    llm.media.fail_next("images", 400)
    assert (await generate(http, llm)).status_code == 400
    assert (await generate(http, llm)).status_code == 200
    assert (await http.get(f"{llm.base_url}/_fake/files/img-unknown")).status_code == 404
    listed = (await http.get(f"{llm.base_url}/_fake/media_requests")).json()
    assert len(listed["images"]) == 6 and listed["images"][0]["prompt"] == "x" * 1001  # the empty one never counted


def vision_message(url: str, role: str = "user") -> dict[str, Any]:
    return {
        "role": role,
        "content": [{"type": "text", "text": "这是什么？"}, {"type": "image_url", "image_url": {"url": url}}],
    }


async def chat(http: httpx.AsyncClient, llm: FakeLLM, *messages: dict[str, Any]) -> httpx.Response:
    return await http.post(f"{llm.base_url}/v1/chat/completions", json={"model": "m", "messages": list(messages)})


async def test_chat_records_image_url_parts(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    png = png_bytes(16, 16)
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    resp = await chat(http, llm, vision_message(data_url), vision_message("https://example.com/cat.jpg"))
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "echo: 这是什么？"
    [request] = await llm.wait_for_requests()
    assert request.image_urls == [data_url, "https://example.com/cat.jpg"]
    assert request.images() == [png]


async def test_chat_refuses_bad_images(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64
    unsupported = await chat(http, llm, vision_message("data:image/heic;base64," + base64.b64encode(heic).decode()))
    assert unsupported.status_code == 400 and "unsupported image" in unsupported.json()["error"]["message"]
    html = await chat(http, llm, vision_message("data:image/png;base64," + base64.b64encode(b"<html>").decode()))
    assert html.status_code == 400
    assert (await chat(http, llm, vision_message("data:image/png;base64,@@not base64@@"))).status_code == 400
    assert (await chat(http, llm, vision_message("file:///etc/passwd"))).status_code == 400
    system = await chat(
        http, llm, vision_message("https://example.com/a.png", role="system"), {"role": "user", "content": "hi"}
    )
    assert (
        system.status_code == 400 and "only allowed for messages with role 'user'" in system.json()["error"]["message"]
    )
