"""Images and voice out of nlp: generate or speak, fit WeCom's limits, store, and hand back the
`MediaRef`s a ReplyDrafted carries (docs/media.md "Images out", "Voice out").

Each step is bounded (`deadline_s`: a slow endpoint is cancelled) and never raises: a drawing that
fails is a reason the drafting stage turns into one apology; speech that fails is no voice (the
text still goes out — voice is a bonus). Files are stored under their digest, so a redelivered
message stores the same reference again. Metrics: `wxbot_nlp_media_total{kind,outcome}` and
`wxbot_nlp_media_step_seconds{kind,step}`; spans `image.generate` and `voice.synthesize` hold the
endpoint's CLIENT span.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxbot_common.logs import get_logger
from wxbot_common.media.audio import to_wecom_voice
from wxbot_common.media.errors import MediaError as ConversionError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.generation import ImageGenerationError, ImageGenerator
from wxbot_common.media.image import to_wecom_image
from wxbot_common.media.speech import Speaker, SpeechError
from wxbot_common.media.store import MediaError as StoreError
from wxbot_common.media.store import MediaStore
from wxbot_nlp.drawing import MAX_PROMPT_CHARS
from wxbot_nlp.skills.results import ToolResult, failed
from wxbot_proto.events.v1 import events_pb2 as ev

T = TypeVar("T")
DRAW_TOOL = "draw_image"


class VoiceReply(enum.StrEnum):
    """VOICE_REPLY: which answers are also spoken."""

    NEVER = "never"
    WHEN_SPOKEN = "when_spoken"  # the user's message was a voice message
    ALWAYS = "always"


class MediaOutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "wxbot_nlp_media",
            "Images drawn and answers spoken, by kind (image, voice) and outcome (ok or why not: unavailable, "
            "rejected, not_image, too_large, timeout, convert, store, error)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.steps = Histogram(
            "wxbot_nlp_media_step_seconds",
            "Time of each media step, by kind and step (generate, speak, convert, store)",
            ["kind", "step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
            registry=registry,
        )


class _StepFailedError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Drawn:
    """A drawing: the stored image, or why there is none."""

    media: ev.MediaRef | None
    reason: str = "ok"


class _Steps:
    """Times each step and turns its failures into `_StepFailedError(reason)`."""

    def __init__(self, metrics: MediaOutMetrics, kind: str) -> None:
        self._metrics = metrics
        self._kind = kind

    async def run(self, step: str, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await work()
        except (ImageGenerationError, SpeechError) as exc:
            raise _StepFailedError(exc.reason, str(exc)) from exc
        except ConversionError as exc:
            raise _StepFailedError("too_large" if exc.reason == "too_large" else "convert", str(exc)) from exc
        except StoreError as exc:
            raise _StepFailedError("store", str(exc)) from exc
        finally:
            self._metrics.steps.labels(self._kind, step).observe(time.perf_counter() - started)


class Drawer:
    """`draw(prompt)`: generate → `to_wecom_image` (JPEG/PNG ≤ 2 MB) → media store, within `deadline_s`."""

    def __init__(
        self,
        generator: ImageGenerator,
        ffmpeg: Ffmpeg,
        store: MediaStore,
        metrics: MediaOutMetrics,
        deadline_s: float,
    ) -> None:
        self._generator = generator
        self._ffmpeg = ffmpeg
        self._store = store
        self._metrics = metrics
        self.deadline_s = deadline_s
        self._tracer = trace.get_tracer("wxbot.nlp.media")
        self._log = get_logger("wxbot.nlp.media")

    async def draw(self, prompt: str, deadline_s: float | None = None) -> Drawn:
        limit = self.deadline_s if deadline_s is None else min(deadline_s, self.deadline_s)
        with self._tracer.start_as_current_span(
            "image.generate", attributes={"gen_ai.request.model": self._generator.model}
        ) as span:
            try:
                ref = await asyncio.wait_for(self._draw(prompt), limit)
                outcome = "ok"
            except TimeoutError:
                ref, outcome = None, "timeout"
            except _StepFailedError as exc:
                ref, outcome = None, exc.reason
                self._log.warning("image_failed", reason=exc.reason, error=str(exc)[:300])
            except Exception as exc:
                ref, outcome = None, "error"
                self._log.exception("image_failed", reason="error", error=repr(exc))
            span.set_attribute("wxbot.media.outcome", outcome)
            if ref is None:
                span.set_status(StatusCode.ERROR, outcome)
        self._metrics.outcomes.labels("image", outcome).inc()
        return Drawn(ref, outcome)

    async def _draw(self, prompt: str) -> ev.MediaRef:
        steps = _Steps(self._metrics, "image")
        raw = await steps.run("generate", lambda: self._generator.generate(prompt))
        image = await steps.run("convert", lambda: to_wecom_image(self._ffmpeg, raw))
        stored = await steps.run("store", lambda: self._store.put(image.data, image.mime))
        ref = stored.to_proto()
        ref.caption = prompt
        return ref


class Voicer:
    """`speak(text)`: TTS → `to_wecom_voice` (AMR parts ≤ 59 s, ≤ 2 MB) → media store; [] on any failure."""

    def __init__(
        self,
        speaker: Speaker,
        ffmpeg: Ffmpeg,
        store: MediaStore,
        metrics: MediaOutMetrics,
        policy: VoiceReply,
        deadline_s: float,
    ) -> None:
        self._speaker = speaker
        self._ffmpeg = ffmpeg
        self._store = store
        self._metrics = metrics
        self.policy = policy
        self._deadline_s = deadline_s
        self._tracer = trace.get_tracer("wxbot.nlp.media")
        self._log = get_logger("wxbot.nlp.media")

    def wanted(self, message: ev.MessageReceived) -> bool:
        if self.policy is VoiceReply.ALWAYS:
            return True
        return self.policy is VoiceReply.WHEN_SPOKEN and message.kind == ev.MESSAGE_KIND_VOICE

    async def speak(self, text: str) -> list[ev.MediaRef]:
        with self._tracer.start_as_current_span("voice.synthesize") as span:
            try:
                refs = await asyncio.wait_for(self._speak(text), self._deadline_s)
                outcome = "ok"
            except TimeoutError:
                refs, outcome = [], "timeout"
            except _StepFailedError as exc:
                refs, outcome = [], exc.reason
                self._log.warning("speech_failed", reason=exc.reason, error=str(exc)[:300])
            except Exception as exc:
                refs, outcome = [], "error"
                self._log.exception("speech_failed", reason="error", error=repr(exc))
            span.set_attribute("wxbot.media.outcome", outcome)
            if not refs:
                span.set_status(StatusCode.ERROR, outcome)
        self._metrics.outcomes.labels("voice", outcome).inc()
        return refs

    async def _speak(self, text: str) -> list[ev.MediaRef]:
        steps = _Steps(self._metrics, "voice")
        audio = await steps.run("speak", lambda: self._speaker.speak(text))
        parts = await steps.run("convert", lambda: to_wecom_voice(self._ffmpeg, audio))
        refs = []
        for part in parts:
            stored = await steps.run("store", lambda p=part: self._store.put(p.data, "audio/amr"))  # type: ignore[misc]
            refs.append(stored.to_proto())
        return refs


class DrawTool:
    """Image generation offered to the model as the tool `draw_image` (IMAGE_TOOL): the image goes
    with the answer; the model is told it will be sent, or why it could not be made."""

    name = DRAW_TOOL

    def __init__(self, drawer: Drawer) -> None:
        self.drawer = drawer
        self._definition: dict[str, Any] = {
            "type": "function",
            "function": {
                "name": DRAW_TOOL,
                "description": "Create an image from a text description and send it to the user with your answer. "
                "Use it only when the user asks for a picture, drawing or image.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "prompt": {
                            "type": "string",
                            "description": "What the image shows, in detail",
                            "maxLength": MAX_PROMPT_CHARS,
                        }
                    },
                    "required": ["prompt"],
                },
            },
        }

    def definition(self) -> dict[str, Any]:
        """One dict for the tool's life (requests encode it once); read it, never change it."""
        return self._definition

    async def call(self, arguments: str, timeout_s: float) -> tuple[ToolResult, list[ev.MediaRef]]:
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return failed("invalid_arguments", "the arguments are not valid JSON", DRAW_TOOL), []
        prompt = args.get("prompt") if isinstance(args, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            return failed("invalid_arguments", "'prompt' must be a non-empty string", DRAW_TOOL), []
        drawn = await self.drawer.draw(prompt.strip()[:MAX_PROMPT_CHARS], timeout_s)
        if drawn.media is None:
            return failed(drawn.reason, f"the image could not be created ({drawn.reason})", DRAW_TOOL), []
        note = "The image was created and will be sent with your answer; do not describe a link."
        return ToolResult(json.dumps({"status": "created", "note": note})), [drawn.media]


@dataclass(frozen=True)
class MediaOut:
    """What this nlp replica can add to answers: drawings (an image endpoint and ffmpeg), voice (VOICE_REPLY)."""

    drawer: Drawer | None = None
    voicer: Voicer | None = None
