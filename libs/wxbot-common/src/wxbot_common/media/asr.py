"""Speech to text over an OpenAI-compatible `/audio/transcriptions` endpoint (multipart, `ASR_MODEL`).

aiohttp through `TracedHttp` like the LLM client: one CLIENT span per call, `traceparent` sent.
Every failure is an `AsrError` whose `reason` (`unavailable`, `rejected`, `empty`) a service maps
to one plain notice; the caller bounds the time (a slow endpoint is cancelled, never awaited).
"""

from __future__ import annotations

import json

import aiohttp

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.media.settings import MediaEndpoint

ASR_STATUS = "wxbot.asr"
"""MessageReceived attribute set by the channel that transcribed a voice message: `ok` (the
transcript is the event's text) or the reason it failed (`corrupt`, `empty`, `timeout`,
`unavailable`, `download`…): the drafting stage answers the text or one notice."""
ASR_OK = "ok"


class AsrError(Exception):
    """The audio was not transcribed; `reason` is a stable short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Transcriber:
    """`transcribe(wav)` → the text, from the configured endpoint."""

    def __init__(self, http: TracedHttp, endpoint: MediaEndpoint) -> None:
        self._http = http
        self._endpoint = endpoint

    @property
    def model(self) -> str:
        return self._endpoint.model

    async def transcribe(self, audio: bytes, filename: str = "voice.wav", content_type: str = "audio/wav") -> str:
        form = aiohttp.FormData()
        form.add_field("model", self._endpoint.model)
        form.add_field("response_format", "json")
        form.add_field("file", audio, filename=filename, content_type=content_type)
        headers = {"Authorization": f"Bearer {self._endpoint.api_key}"} if self._endpoint.api_key else {}
        try:
            async with self._http.request(
                "POST", self._endpoint.url("audio/transcriptions"), data=form, headers=headers
            ) as resp:
                status, body = resp.status, await resp.read()
        except HttpError as exc:
            raise AsrError("unavailable", f"transcription endpoint unreachable: {exc!r}") from exc
        if status >= 500 or status == 429:
            raise AsrError("unavailable", f"transcription endpoint answered HTTP {status}")
        if status != 200:
            raise AsrError("rejected", f"transcription endpoint answered HTTP {status}: {body[:200]!r}")
        try:
            text = json.loads(body).get("text")
        except (ValueError, AttributeError) as exc:
            raise AsrError("unavailable", "transcription answer is not a JSON object") from exc
        if not isinstance(text, str) or not text.strip():
            raise AsrError("empty", "nothing was recognised in the audio")
        return text.strip()
