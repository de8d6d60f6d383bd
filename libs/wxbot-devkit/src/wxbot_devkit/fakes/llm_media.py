"""The media endpoints of the fake OpenAI-compatible server: `/v1/audio/transcriptions`,
`/v1/audio/speech`, `/v1/images/generations`, and the checks of `image_url` parts in chat requests.

As strict as OpenAI where it matters to a client: transcription takes only the formats Whisper
takes (AMR is refused: convert first), a file over 25 MB gets 413, a WAV under 0.1 s is too short;
image URLs must be http(s) or base64 data URLs of PNG, JPEG, GIF or WebP and only in user messages.
Answers are real files made in code (a WAV of the spoken text's length, a PNG of the asked size).
Speech is produced as `wav` or `pcm` only: ask for one of those (the fake has no MP3 encoder).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import struct
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wxbot_devkit.fakes.media_files import mime_type, png_bytes, sniff, wav_bytes
from wxbot_devkit.fakes.waiting import wait_until

MAX_AUDIO_BYTES = 25 * 1024 * 1024
MAX_IMAGE_URL_BYTES = 20 * 1024 * 1024
MIN_AUDIO_S = 0.1
MAX_SPEECH_INPUT = 4096
DEFAULT_TRANSCRIPT = "你好，这是一段语音。"
WHISPER_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
WHISPER_FORMATS = frozenset({"flac", "mp3", "mp4", "ogg", "wav", "webm"})  # as sniffed
VISION_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
SPEECH_RATE_HZ = 24_000  # OpenAI's pcm: 24 kHz, 16-bit, mono
PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000}
IMAGE_SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
}
ENDPOINTS = ("transcriptions", "speech", "images")
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """One received /v1/audio/transcriptions call."""

    model: str
    filename: str
    content_type: str
    data: bytes
    fields: dict[str, str]
    received_at: float

    @property
    def format(self) -> str | None:
        """The audio format by its bytes ("wav", "mp3", …; "amr" is refused)."""
        return sniff(self.data)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": len(self.data),
            "format": self.format,
            "fields": self.fields,
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """One received /v1/audio/speech call."""

    model: str
    input: str
    voice: str
    response_format: str
    speed: float
    received_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input": self.input,
            "voice": self.voice,
            "response_format": self.response_format,
            "speed": self.speed,
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One received /v1/images/generations call."""

    model: str
    prompt: str
    n: int
    size: str
    response_format: str
    received_at: float
    body: dict[str, Any] = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "n": self.n,
            "size": self.size,
            "response_format": self.response_format,
            "received_at": self.received_at,
        }


def openai_error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status)


def decode_data_url(url: str) -> tuple[str, bytes] | None:
    """(mime type, bytes) of a base64 `data:` URL, or None when it is not one or does not decode."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    try:
        return match["mime"], base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        return None


def image_parts(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every `image_url` content part with the role of its message, in order."""
    found: list[tuple[str, dict[str, Any]]] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            role = str(message.get("role"))
            found.extend((role, p) for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return found


def image_url_error(messages: list[dict[str, Any]]) -> str | None:
    """What OpenAI would reject (400) in the image parts of a chat request, else None."""
    for role, part in image_parts(messages):
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            return "Invalid 'image_url': expected an object with a non-empty 'url'."
        if role != "user":
            return f"Image URLs are only allowed for messages with role 'user', but this message with role '{role}' contains an image URL."  # noqa: E501
        if url.startswith(("http://", "https://")):
            continue
        if not url.startswith("data:"):
            return "Invalid image URL: expected an http(s) URL or a base64-encoded data URL."
        decoded = decode_data_url(url)
        if decoded is None:
            return "Invalid base64 image_url."
        if len(decoded[1]) > MAX_IMAGE_URL_BYTES:
            return "Image too large: the maximum is 20 MB."
        if sniff(decoded[1]) not in VISION_FORMATS:
            return (
                "You uploaded an unsupported image. Please make sure your image has of one the following "
                "formats: ['png', 'jpeg', 'gif', 'webp']."
            )
    return None


def default_speech_seconds(request: SpeechRequest) -> float:
    """About five characters a second, at least half a second."""
    return max(0.5, len(request.input) * 0.2 / max(0.25, request.speed))


def wav_duration_s(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as audio:
            frames, rate = int(audio.getnframes()), int(audio.getframerate())
            return frames / rate
    except (wave.Error, EOFError, struct.error, ZeroDivisionError):
        return None


class MediaEndpoints:
    """State and routes of the media endpoints; `FakeLLM.media` holds one. Thread-safe."""

    def __init__(self, authorized: Callable[[Request], bool], record_limit: int = 10_000) -> None:
        self._authorized = authorized
        self._lock = threading.Lock()
        self._record_limit = record_limit
        self._transcriptions: deque[TranscriptionRequest] = deque(maxlen=record_limit)
        self._speeches: deque[SpeechRequest] = deque(maxlen=record_limit)
        self._images: deque[ImageRequest] = deque(maxlen=record_limit)
        self._files: dict[str, bytes] = {}  # generated images served by URL
        self._faults: dict[str, deque[int]] = {e: deque() for e in ENDPOINTS}
        self.reset()

    # -- knobs -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests and faults; default transcript, speech length and images; no latency."""
        with self._lock:
            self._transcriptions.clear()
            self._speeches.clear()
            self._images.clear()
            for faults in self._faults.values():
                faults.clear()
        self.transcript: Callable[[TranscriptionRequest], str] = lambda _r: DEFAULT_TRANSCRIPT
        self.speech_seconds: Callable[[SpeechRequest], float] = default_speech_seconds
        self.image_bytes: bytes | None = None  # what generations return; None: a PNG of the asked size
        self.latency_s = 0.0  # before every media answer: a slow endpoint

    def fail_next(self, endpoint: str, *statuses: int) -> None:
        """The next len(statuses) calls of `endpoint` ("transcriptions", "speech", "images") answer these."""
        if endpoint not in self._faults:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, not {endpoint!r}")
        with self._lock:
            self._faults[endpoint].extend(statuses)

    def say(self, text: str) -> None:
        """Every transcription answers `text`."""
        self.transcript = lambda _r: text

    # -- inspection --------------------------------------------------------------------------------

    @property
    def transcriptions(self) -> list[TranscriptionRequest]:
        with self._lock:
            return list(self._transcriptions)

    @property
    def speeches(self) -> list[SpeechRequest]:
        with self._lock:
            return list(self._speeches)

    @property
    def image_requests(self) -> list[ImageRequest]:
        with self._lock:
            return list(self._images)

    async def wait_for_transcriptions(self, n: int = 1, timeout: float = 5.0) -> list[TranscriptionRequest]:  # noqa: ASYNC109
        return await wait_until(
            lambda: got if len(got := self.transcriptions) >= n else None, timeout, f"{n} transcription request(s)"
        )

    async def wait_for_speeches(self, n: int = 1, timeout: float = 5.0) -> list[SpeechRequest]:  # noqa: ASYNC109
        return await wait_until(
            lambda: got if len(got := self.speeches) >= n else None, timeout, f"{n} speech request(s)"
        )

    async def wait_for_images(self, n: int = 1, timeout: float = 5.0) -> list[ImageRequest]:  # noqa: ASYNC109
        return await wait_until(
            lambda: got if len(got := self.image_requests) >= n else None, timeout, f"{n} image request(s)"
        )

    # -- protocol ----------------------------------------------------------------------------------

    async def _prelude(self, endpoint: str) -> Response | None:
        """The scripted fault of this call, after the latency (None: answer normally)."""
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)  # the scripted slowness, not a wait for a condition
        with self._lock:
            status = self._faults[endpoint].popleft() if self._faults[endpoint] else None
        if status is None:
            return None
        if status == 429:
            response = openai_error(429, "Rate limit reached (fake)", "requests", "rate_limit_exceeded")
            response.headers["Retry-After"] = "1"
            return response
        return openai_error(
            status, f"fake upstream error {status}", "server_error" if status >= 500 else "invalid_request_error"
        )

    def _unauthorized(self) -> Response:
        return openai_error(401, "Incorrect API key provided (fake)", code="invalid_api_key")

    async def _handle_transcriptions(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        if int(request.headers.get("content-length") or 0) > MAX_AUDIO_BYTES + 64 * 1024:
            return openai_error(413, f"Maximum content size limit ({MAX_AUDIO_BYTES}) exceeded.")
        try:
            async with request.form(max_files=2, max_fields=32) as form:
                upload = form.get("file")
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                if not isinstance(upload, UploadFile):
                    return openai_error(400, "Missing required parameter: 'file' (a file part of multipart/form-data).")
                data, filename = await upload.read(), upload.filename or ""
                content_type = upload.content_type or ""
        except (HTTPException, MultiPartException):
            return openai_error(400, "Could not parse multipart form")
        if not fields.get("model"):
            return openai_error(400, "you must provide a model parameter")
        record = TranscriptionRequest(fields["model"], filename, content_type, data, fields, time.time())
        with self._lock:
            self._transcriptions.append(record)
        if (fault := await self._prelude("transcriptions")) is not None:
            return fault
        if len(data) > MAX_AUDIO_BYTES:
            return openai_error(413, f"Maximum content size limit ({MAX_AUDIO_BYTES}) exceeded.")
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in WHISPER_EXTENSIONS or record.format not in WHISPER_FORMATS:
            return openai_error(
                400, f"Invalid file format. Supported formats: {list(WHISPER_EXTENSIONS)}", code="invalid_file_format"
            )
        duration = wav_duration_s(data) if record.format == "wav" else 1.0
        if duration is None:
            return openai_error(400, "The audio file could not be decoded or its format is not supported.")
        if duration < MIN_AUDIO_S:
            return openai_error(
                400, "Audio file is too short. Minimum audio length is 0.1 seconds.", code="audio_too_short"
            )
        text = self.transcript(record)
        response_format = fields.get("response_format", "json")
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "verbose_json":
            return JSONResponse(
                {
                    "task": "transcribe",
                    "language": fields.get("language", "chinese"),
                    "duration": duration,
                    "text": text,
                }
            )
        if response_format in ("srt", "vtt"):
            mark = "," if response_format == "srt" else "."
            cue = f"00:00:00{mark}000 --> 00:00:01{mark}000"
            head = "1\n" if response_format == "srt" else "WEBVTT\n\n"
            return PlainTextResponse(f"{head}{cue}\n{text}\n")
        if response_format != "json":
            return openai_error(400, f"Invalid value for 'response_format': {response_format!r}.")
        return JSONResponse({"text": text})

    async def _handle_speech(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "body is not JSON")
        if not isinstance(body, dict):
            return openai_error(400, "body must be a JSON object")
        model, text, voice = body.get("model"), body.get("input"), body.get("voice")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter")
        if not isinstance(text, str) or not text:
            return openai_error(400, "Missing required parameter: 'input'.")
        if not isinstance(voice, str) or not voice:
            return openai_error(400, "Missing required parameter: 'voice'.")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return openai_error(400, "Invalid 'speed': expected a number from 0.25 to 4.0.")
        response_format = str(body.get("response_format", "mp3"))
        record = SpeechRequest(model, text, voice, response_format, float(speed), time.time())
        with self._lock:
            self._speeches.append(record)
        if (fault := await self._prelude("speech")) is not None:
            return fault
        if len(text) > MAX_SPEECH_INPUT:
            return openai_error(
                400, f"Invalid 'input': string too long. Expected at most {MAX_SPEECH_INPUT} characters."
            )
        if response_format not in ("wav", "pcm"):
            return openai_error(
                400, f"the fake LLM speaks only response_format 'wav' or 'pcm', not {response_format!r} (no encoder)"
            )
        audio = wav_bytes(self.speech_seconds(record), SPEECH_RATE_HZ)
        if response_format == "pcm":
            return Response(audio[44:], media_type="audio/pcm")  # the samples without the 44-byte header
        return Response(audio, media_type="audio/wav")

    async def _handle_generations(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "body is not JSON")
        if not isinstance(body, dict):
            return openai_error(400, "body must be a JSON object")
        prompt, model = body.get("prompt"), str(body.get("model") or "dall-e-2")
        if not isinstance(prompt, str) or not prompt:
            return openai_error(400, "Missing required parameter: 'prompt'.")
        n, size = body.get("n", 1), str(body.get("size") or "1024x1024")
        gpt_image = model.startswith("gpt-image")
        response_format = "b64_json" if gpt_image else str(body.get("response_format") or "url")
        record = ImageRequest(model, prompt, n if isinstance(n, int) else 0, size, response_format, time.time(), body)
        with self._lock:
            self._images.append(record)
        if (fault := await self._prelude("images")) is not None:
            return fault
        problem = self._generation_error(model, prompt, n, size, response_format)
        if problem is not None:
            return openai_error(400, problem)
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        image = self.image_bytes if self.image_bytes is not None else png_bytes(width, height)
        data: list[dict[str, str]] = []
        for _ in range(record.n):
            if response_format == "b64_json":
                item = {"b64_json": base64.b64encode(image).decode()}
            else:
                name = f"img-{uuid.uuid4().hex}"
                with self._lock:
                    self._files[name] = image
                    while len(self._files) > self._record_limit:
                        self._files.pop(next(iter(self._files)))
                item = {"url": f"{str(request.base_url).rstrip('/')}/_fake/files/{name}"}
            if model == "dall-e-3":
                item["revised_prompt"] = prompt
            data.append(item)
        return JSONResponse({"created": int(time.time()), "data": data})

    @staticmethod
    def _generation_error(model: str, prompt: str, n: object, size: str, response_format: str) -> str | None:
        limit = PROMPT_LIMITS.get(model, 32_000)
        if len(prompt) > limit:
            return f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}."
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            return "Invalid 'n': expected an integer from 1 to 10."
        if model == "dall-e-3" and n != 1:
            return "You must provide n=1 for this model."
        allowed = IMAGE_SIZES.get(model)
        if (allowed is not None and size not in allowed) or (size != "auto" and _SIZE.match(size) is None):
            return f"Invalid value for 'size': {size!r}."
        if response_format not in ("url", "b64_json"):
            return f"Invalid value for 'response_format': {response_format!r}. Supported: 'url', 'b64_json'."
        return None

    async def _file(self, request: Request) -> Response:
        with self._lock:
            image = self._files.get(request.path_params["name"])
        if image is None:
            return PlainTextResponse("not found", status_code=404)
        # What a misbehaving image host answers (a login page, an error) goes out as what it is.
        html = image.lstrip()[:1].startswith(b"<")
        return Response(image, media_type="text/html; charset=utf-8" if html else mime_type(image))

    async def _ctl_requests(self, request: Request) -> Response:
        return JSONResponse(
            {
                "transcriptions": [r.to_json() for r in self.transcriptions],
                "speech": [r.to_json() for r in self.speeches],
                "images": [r.to_json() for r in self.image_requests],
            }
        )

    def routes(self) -> list[Route]:
        return [
            Route("/v1/audio/transcriptions", self._handle_transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", self._handle_speech, methods=["POST"]),
            Route("/v1/images/generations", self._handle_generations, methods=["POST"]),
            Route("/_fake/files/{name}", self._file, methods=["GET"]),
            Route("/_fake/media_requests", self._ctl_requests, methods=["GET"]),
        ]
