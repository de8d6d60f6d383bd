"""Where the OpenAI-compatible media endpoints are: speech to text, text to speech, image
generation and vision.

Each defaults to the chat endpoint (`LLM_BASE_URL`, `LLM_API_KEY`), so one endpoint that serves
them all needs no extra settings; `ASR_*`, `TTS_*`, `IMAGE_*` move one elsewhere. An endpoint
moved to another host gets its own key (`*_API_KEY`) and never the LLM's: a key is only sent to
the host it was issued for.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from wxbot_common.settings import CommonSettings

DEFAULT_LLM_MODEL = "gpt-4o-mini"


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """One resolved endpoint: `base_url` ends in /v1 ("" = not configured), `api_key` may be ""."""

    base_url: str
    api_key: str
    model: str

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    def url(self, path: str) -> str:
        """`url("audio/transcriptions")` → `<base_url>/audio/transcriptions`."""
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"


class MediaSettings(CommonSettings):
    """The media endpoints; a service that needs them subclasses this instead of CommonSettings."""

    llm_base_url: str = Field("", description="OpenAI-compatible endpoint ending in /v1; empty = no LLM")
    llm_api_key: str = Field("", description="bearer token for the LLM endpoint")
    llm_model: str = Field(DEFAULT_LLM_MODEL, description="model name sent to the endpoint")
    asr_base_url: str = Field("", description="speech to text (/audio/transcriptions); default LLM_BASE_URL")
    asr_api_key: str = Field("", description="its key; default LLM_API_KEY when ASR_BASE_URL is unset")
    asr_model: str = Field("whisper-1", description="transcription model")
    tts_base_url: str = Field("", description="text to speech (/audio/speech); default LLM_BASE_URL")
    tts_api_key: str = Field("", description="its key; default LLM_API_KEY when TTS_BASE_URL is unset")
    tts_model: str = Field("tts-1", description="speech model")
    tts_voice: str = Field("alloy", description="voice name sent with each speech request")
    image_base_url: str = Field("", description="image generation (/images/generations); default LLM_BASE_URL")
    image_api_key: str = Field("", description="its key; default LLM_API_KEY when IMAGE_BASE_URL is unset")
    image_model: str = Field("dall-e-3", description="image generation model")
    vision_model: str = Field("", description="chat model that reads images; default LLM_MODEL")

    def _resolve(self, base_url: str, api_key: str, model: str) -> MediaEndpoint:
        if not base_url:
            return MediaEndpoint(self.llm_base_url, api_key or self.llm_api_key, model)
        return MediaEndpoint(base_url, api_key, model)

    @property
    def asr(self) -> MediaEndpoint:
        return self._resolve(self.asr_base_url, self.asr_api_key, self.asr_model)

    @property
    def tts(self) -> MediaEndpoint:
        return self._resolve(self.tts_base_url, self.tts_api_key, self.tts_model)

    @property
    def image(self) -> MediaEndpoint:
        return self._resolve(self.image_base_url, self.image_api_key, self.image_model)

    @property
    def vision(self) -> MediaEndpoint:
        """The chat endpoint itself, with the vision model."""
        return MediaEndpoint(self.llm_base_url, self.llm_api_key, self.vision_model or self.llm_model)
