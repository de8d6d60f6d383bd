"""Media endpoints default to the chat endpoint, and a key is only sent to the host it belongs to."""

from __future__ import annotations

import pytest

from wxbot_common.media.settings import MediaEndpoint, MediaSettings

LLM = {"LLM_BASE_URL": "https://llm.example/v1", "LLM_API_KEY": "sk-llm", "LLM_MODEL": "chat-1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for prefix in ("LLM", "ASR", "TTS", "IMAGE", "VISION"):
        for suffix in ("BASE_URL", "API_KEY", "MODEL", "VOICE"):
            monkeypatch.delenv(f"{prefix}_{suffix}", raising=False)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def test_one_endpoint_serves_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in LLM.items():
        monkeypatch.setenv(k, v)
    s = MediaSettings()
    assert s.asr == MediaEndpoint("https://llm.example/v1", "sk-llm", "whisper-1")
    assert s.tts == MediaEndpoint("https://llm.example/v1", "sk-llm", "tts-1")
    assert s.image == MediaEndpoint("https://llm.example/v1", "sk-llm", "dall-e-3")
    assert s.vision == MediaEndpoint("https://llm.example/v1", "sk-llm", "chat-1")
    assert s.asr.url("/audio/transcriptions") == "https://llm.example/v1/audio/transcriptions"
    assert s.media_ttl_s == 3 * 86400 and s.media_max_bytes == 20 * 1024 * 1024


def test_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {
        **LLM,
        "ASR_BASE_URL": "http://whisper.local/v1",
        "ASR_MODEL": "large-v3",
        "TTS_MODEL": "cosyvoice",
        "TTS_API_KEY": "sk-tts",
        "IMAGE_BASE_URL": "https://img.example/v1/",
        "IMAGE_API_KEY": "sk-img",
        "VISION_MODEL": "qwen-vl-max",
        "MEDIA_TTL_S": "60",
    }.items():
        monkeypatch.setenv(k, v)
    s = MediaSettings()
    assert s.asr == MediaEndpoint("http://whisper.local/v1", "", "large-v3")  # another host: not the LLM's key
    assert s.tts == MediaEndpoint("https://llm.example/v1", "sk-tts", "cosyvoice")
    assert s.image.url("images/generations") == "https://img.example/v1/images/generations"
    assert s.image.api_key == "sk-img"
    assert s.vision.model == "qwen-vl-max"
    assert s.media_ttl_s == 60


def test_nothing_configured() -> None:
    s = MediaSettings()
    assert not s.asr.configured and not s.image.configured and not s.vision.configured
