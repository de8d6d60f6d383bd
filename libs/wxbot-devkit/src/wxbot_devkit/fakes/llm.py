"""Fake OpenAI-compatible chat server: deterministic replies, JSON or SSE streaming, latency and fault knobs.

Replies are a pure function of the request (default `echo: <last user message>`), so end-to-end tests can
assert on exact text; faults (HTTP status queue, hang) are scriptable from Python or under `/_fake/...`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_devkit.fakes.server import FakeService, base_arg_parser, serve_forever
from wxbot_devkit.fakes.waiting import wait_until

HANG_POLL_S = 0.05
_PIECES = re.compile(r"\s*\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One received /v1/chat/completions call (recorded whether or not a fault answered it)."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    received_at: float  # time.time()
    body: dict[str, Any]

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "messages": self.messages, "stream": self.stream, "received_at": self.received_at}


ReplyFn = Callable[[ChatRequest], str]


def content_text(content: object) -> str:
    """Message content is a string or a list of typed parts; keep the text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def echo_reply(request: ChatRequest) -> str:
    return f"echo: {request.last_user_message}"


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about one token per word, never zero."""
    return max(1, len(text.split()))


def openai_error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status)


class FakeLLM(FakeService):
    """State and ASGI app of the fake. Thread-safe: the app may serve on another thread than the test."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = "fake-model",
        latency_s: float = 0.0,
        reply: ReplyFn | None = None,
        retry_after_s: float = 1.0,
        record_limit: int = 100_000,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.model = model
        self._defaults = (latency_s, reply or echo_reply, retry_after_s)
        self.latency_s, self.reply, self.retry_after_s = self._defaults
        # While True, calls are accepted and parked without an answer until the client hangs up
        # (counted in `abandoned`), the flag is cleared (then they answer, late), or the server stops.
        self.hang = False
        self.stream_chunk_delay_s = 0.0  # pause before each streamed chunk: a stream that trickles
        self._lock = threading.Lock()
        self._requests: deque[ChatRequest] = deque(maxlen=record_limit)
        self._faults: deque[int] = deque()
        self._rate_limited_until = 0.0  # monotonic: until then every chat call answers 429
        self.calls = 0
        self.rate_limited = 0  # calls answered 429 by a storm (`rate_limit_for`)
        self.abandoned = 0  # parked calls whose client disconnected before an answer
        self.in_flight = 0  # calls waiting out `latency_s` right now
        self.max_in_flight = 0  # the most that ever waited at once: how many calls the bot overlaps

    # -- knobs -------------------------------------------------------------------------------------

    def fail_next(self, *statuses: int) -> None:
        """The next len(statuses) chat calls answer these HTTP statuses (429 carries Retry-After)."""
        with self._lock:
            self._faults.extend(statuses)

    def rate_limit_for(self, seconds: float, retry_after_s: float | None = None) -> None:
        """A 429 storm: for `seconds` from now every chat call answers 429 with `Retry-After`
        (`retry_after_s`, default the constructor's), as a provider shedding load does."""
        with self._lock:
            if retry_after_s is not None:
                self.retry_after_s = retry_after_s
            self._rate_limited_until = time.monotonic() + seconds

    def reset(self) -> None:
        """Forget requests and faults; restore constructor latency, reply and Retry-After; stop hanging."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._rate_limited_until = 0.0
            self.calls = self.rate_limited = self.abandoned = 0
            self.hang = False
            self.stream_chunk_delay_s = 0.0
            self.latency_s, self.reply, self.retry_after_s = self._defaults

    # -- inspection --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[ChatRequest]:
        with self._lock:
            return list(self._requests)

    async def wait_for_requests(self, n: int = 1, timeout: float = 5.0) -> list[ChatRequest]:  # noqa: ASYNC109
        """Wait until at least `n` chat calls were received; returns them all."""
        return await wait_until(
            lambda: reqs if len(reqs := self.requests) >= n else None,
            timeout,
            f"{n} LLM request(s) (have {len(self.requests)})",
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "max_in_flight": self.max_in_flight,
                "pending_statuses": list(self._faults),
                "rate_limited_s": max(0.0, self._rate_limited_until - time.monotonic()),
                "rate_limited": self.rate_limited,
                "hang": self.hang,
                "abandoned": self.abandoned,
                "latency_s": self.latency_s,
            }

    # -- protocol ----------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _fault_response(self, status: int) -> Response:
        if status == 429:
            response = openai_error(429, "Rate limit reached (fake)", "requests", "rate_limit_exceeded")
            response.headers["Retry-After"] = str(math.ceil(self.retry_after_s))
            response.headers["retry-after-ms"] = str(int(self.retry_after_s * 1000))
            return response
        return openai_error(status, f"fake upstream error {status}", "server_error")

    async def _chat(self, request: Request) -> Response:
        if not self._authorized(request):
            return openai_error(401, "Incorrect API key provided (fake)", "invalid_request_error", "invalid_api_key")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "body is not JSON", "invalid_request_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "'messages' must be a non-empty array", "invalid_request_error")
        chat = ChatRequest(str(body.get("model") or self.model), messages, bool(body.get("stream")), time.time(), body)
        with self._lock:
            self.calls += 1
            self._requests.append(chat)
            fault = self._faults.popleft() if self._faults else None
            if fault is None and time.monotonic() < self._rate_limited_until:
                fault = 429
                self.rate_limited += 1
        if fault is not None:
            return self._fault_response(fault)
        while self.hang and not self._closing:  # the flag may be flipped from another thread
            if await request.is_disconnected():  # the client gave up: nobody is left to answer
                with self._lock:
                    self.abandoned += 1
                return Response(status_code=499)
            await asyncio.sleep(HANG_POLL_S)
        if self._closing:
            return openai_error(503, "fake shutting down", "server_error")
        if self.latency_s > 0:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.latency_s)
            finally:
                with self._lock:
                    self.in_flight -= 1
        text = self.reply(chat)
        prompt_tokens = sum(count_tokens(content_text(m.get("content"))) + 4 for m in messages if isinstance(m, dict))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(text),
            "total_tokens": prompt_tokens + count_tokens(text),
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._sse(completion_id, chat.model, text, usage if include_usage else None, self.stream_chunk_delay_s),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )

    @staticmethod
    async def _sse(
        completion_id: str, model: str, text: str, usage: dict[str, int] | None, chunk_delay_s: float = 0.0
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in _PIECES.findall(text):
            if chunk_delay_s > 0:
                await asyncio.sleep(chunk_delay_s)
            yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return openai_error(401, "Incorrect API key provided (fake)", "invalid_request_error", "invalid_api_key")
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "wxbot-fake"}]}
        )

    # -- control API -------------------------------------------------------------------------------

    async def _ctl_faults(self, request: Request) -> Response:
        spec = json.loads(await request.body() or b"{}")
        self.fail_next(*(int(s) for s in spec.get("statuses", [])))
        if "retry_after_s" in spec:
            self.retry_after_s = float(spec["retry_after_s"])
        if "rate_limit_s" in spec:
            self.rate_limit_for(float(spec["rate_limit_s"]))
        if "latency_s" in spec:
            self.latency_s = float(spec["latency_s"])
        if "hang" in spec:
            self.hang = bool(spec["hang"])
        if "stream_chunk_delay_s" in spec:
            self.stream_chunk_delay_s = float(spec["stream_chunk_delay_s"])
        if "reply" in spec:
            fixed = str(spec["reply"])
            self.reply = lambda _request: fixed
        return JSONResponse(self.stats())

    async def _ctl_requests(self, request: Request) -> Response:
        return JSONResponse({"requests": [r.to_json() for r in self.requests]})

    async def _ctl_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse(self.stats())

    async def _ctl_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    def build_app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/_fake/faults", self._ctl_faults, methods=["POST"]),
                Route("/_fake/requests", self._ctl_requests, methods=["GET"]),
                Route("/_fake/reset", self._ctl_reset, methods=["POST"]),
                Route("/_fake/stats", self._ctl_stats, methods=["GET"]),
            ]
        )


def main(argv: list[str] | None = None) -> None:
    parser = base_arg_parser("Fake OpenAI-compatible chat server")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--model", default="fake-model")
    args = parser.parse_args(argv)
    fake = FakeLLM(args.api_key, model=args.model, latency_s=args.latency)
    serve_forever(fake.app, args.host, args.port)


if __name__ == "__main__":
    main()
