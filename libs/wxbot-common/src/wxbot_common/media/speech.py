"""Text to speech over an OpenAI-compatible `/audio/speech` endpoint (`TTS_MODEL`, `TTS_VOICE`).

Asks for `wav` (every OpenAI-compatible server offers it, and it needs no decoder guesswork before
ffmpeg turns it into AMR). Failures are a `SpeechError` (`unavailable`, `rejected`, `empty`); the
caller bounds the time.
"""

from __future__ import annotations

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.media.settings import MediaEndpoint

MAX_INPUT_CHARS = 4096  # OpenAI's limit on `input`


class SpeechError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Speaker:
    """`speak(text)` → audio bytes (WAV)."""

    def __init__(self, http: TracedHttp, endpoint: MediaEndpoint, voice: str) -> None:
        self._http = http
        self._endpoint = endpoint
        self._voice = voice

    async def speak(self, text: str) -> bytes:
        body = {
            "model": self._endpoint.model,
            "input": text[:MAX_INPUT_CHARS],
            "voice": self._voice,
            "response_format": "wav",
        }
        headers = {"Authorization": f"Bearer {self._endpoint.api_key}"} if self._endpoint.api_key else {}
        try:
            async with self._http.request(
                "POST", self._endpoint.url("audio/speech"), json=body, headers=headers
            ) as resp:
                status, audio = resp.status, await resp.read()
        except HttpError as exc:
            raise SpeechError("unavailable", f"speech endpoint unreachable: {exc!r}") from exc
        if status >= 500 or status == 429:
            raise SpeechError("unavailable", f"speech endpoint answered HTTP {status}")
        if status != 200:
            raise SpeechError("rejected", f"speech endpoint answered HTTP {status}: {audio[:200]!r}")
        if not audio:
            raise SpeechError("empty", "speech endpoint answered no audio")
        return audio
