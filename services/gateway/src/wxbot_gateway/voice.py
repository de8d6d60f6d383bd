"""Voice in: a WeCom voice message becomes its transcript before it is published.

Why in the gateway, before the event is published: safety checks `MessageReceived.text` and
context records it, so a transcript placed there is checked and remembered like typed text, and
no new stage is needed. Steps: `media/get` (WeCom's JSON error body → `download`), size check,
the AMR stored in the media store (the event carries its `MediaRef`, never the bytes), AMR → WAV
with ffmpeg, the ASR endpoint. All of it within `VOICE_DEADLINE_S`, because the callback is
answered only after the event is published (WeCom waits 5 s, then retries): a failure or a slow
step leaves the text `[voice]` and the reason in the `wxbot.asr` attribute, and the user gets one
notice. Exactly-once is the callback's own guarantee: nothing is acknowledged before the publish,
a retry carries the same event id.

The bridge's voice frames (the console's playground among them) carry the audio inline: `fill(event,
data)` skips the download and transcribes those bytes the same way (any format ffmpeg decodes).
"""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxbot_common.errors import TransientError
from wxbot_common.logs import get_logger
from wxbot_common.media.asr import ASR_OK, ASR_STATUS, AsrError, Transcriber
from wxbot_common.media.audio import to_asr_audio
from wxbot_common.media.errors import MediaError as ConversionError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.sniff import sniff_audio
from wxbot_common.media.store import MediaError as StoreError
from wxbot_common.media.store import MediaStore
from wxbot_gateway.errors import DeliveryRefusedError, RetryLaterError
from wxbot_gateway.wecom_api import MediaTooLargeError, WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev


class VoiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "wxbot_gateway_voice",
            "Voice messages by outcome (ok, download, too_large, store, corrupt, empty, unsupported, timeout, "
            "unavailable, rejected, error)",
            ["outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "wxbot_gateway_voice_step_seconds",
            "Time of each voice step (download, store, convert, transcribe)",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
            registry=registry,
        )


class _VoiceFailedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class VoiceIntake:
    """`fill(event)`: the transcript and the stored voice put into a voice MessageReceived."""

    def __init__(
        self,
        wecom: WeComClient | None,
        store: MediaStore,
        ffmpeg: Ffmpeg,
        transcriber: Transcriber,
        metrics: VoiceMetrics,
        *,
        deadline_s: float,
        max_bytes: int,
    ) -> None:
        self._wecom = wecom
        self._store = store
        self._ffmpeg = ffmpeg
        self._asr = transcriber
        self._metrics = metrics
        self._deadline_s = deadline_s
        self._max_bytes = max_bytes
        self._tracer = trace.get_tracer("wxbot.gateway.voice")
        self._log = get_logger("wxbot.gateway.voice")

    @staticmethod
    def wanted(event: ev.MessageReceived) -> bool:
        """A voice message not transcribed yet (the Official Account's `Recognition` already is)."""
        return event.kind == ev.MESSAGE_KIND_VOICE and ASR_STATUS not in event.attributes

    async def fill(self, event: ev.MessageReceived, data: bytes | None = None) -> None:
        """Never raises: on failure the event says why (`wxbot.asr`) and keeps its `[voice]` text.
        `data`: the audio itself (a bridge frame); else it is fetched by the event's MediaId."""
        with self._tracer.start_as_current_span("voice.transcribe") as span:
            try:
                async with asyncio.timeout(self._deadline_s):
                    text = await self._transcribe(event, data)
            except TimeoutError:
                outcome = "timeout"
                self._log.warning("voice_failed", reason=outcome, deadline_s=self._deadline_s)
            except _VoiceFailedError as exc:
                outcome = exc.reason
                self._log.warning("voice_failed", reason=outcome, error=str(exc))
            except Exception as exc:  # a bug or an unforeseen library error: still one notice, not a 500 loop
                outcome = "error"
                self._log.exception("voice_failed", reason=outcome, error=repr(exc))
            else:
                outcome = ASR_OK
                event.text = text
            event.attributes[ASR_STATUS] = outcome
            span.set_attribute("wxbot.voice.outcome", outcome)
            self._metrics.outcomes.labels(outcome).inc()

    def _step(self, name: str, started: float) -> None:
        self._metrics.seconds.labels(name).observe(time.perf_counter() - started)

    async def _transcribe(self, event: ev.MessageReceived, data: bytes | None) -> str:
        started = time.perf_counter()
        if data is not None:
            if len(data) > self._max_bytes:
                raise _VoiceFailedError("too_large", f"{len(data)} bytes, limit {self._max_bytes}")
            media_data, content_type = data, _content_type(data)
        else:
            media_data, content_type = await self._download(event), "audio/amr"
        self._step("download", started)
        started = time.perf_counter()
        try:
            ref = await self._store.put(media_data, content_type)
        except StoreError as exc:
            raise _VoiceFailedError("store", str(exc)) from exc
        event.media.CopyFrom(ref.to_proto())
        self._step("store", started)
        started = time.perf_counter()
        try:
            audio = await to_asr_audio(self._ffmpeg, media_data)
        except ConversionError as exc:
            raise _VoiceFailedError(exc.reason, str(exc)) from exc
        self._step("convert", started)
        started = time.perf_counter()
        try:
            text = await self._asr.transcribe(audio.data)
        except AsrError as exc:
            raise _VoiceFailedError(exc.reason, str(exc)) from exc
        self._step("transcribe", started)
        return text

    async def _download(self, event: ev.MessageReceived) -> bytes:
        if not event.media_id or self._wecom is None:
            raise _VoiceFailedError("download", "voice message without MediaId")
        # asyncio.timeout() cancels whichever step is running; ffmpeg is killed on cancellation.
        try:
            media = await self._wecom.get_media(event.media_id, self._max_bytes)
        except MediaTooLargeError as exc:
            raise _VoiceFailedError("too_large", str(exc)) from exc
        except (TransientError, RetryLaterError, DeliveryRefusedError) as exc:
            raise _VoiceFailedError("download", f"media/get failed: {exc}") from exc
        return media.data


def _content_type(data: bytes) -> str:
    """The stored type of inline audio, from its magic bytes."""
    found = sniff_audio(data)
    return f"audio/{found.value}" if found is not None else "application/octet-stream"
