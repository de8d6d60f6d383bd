"""Fake OpenAI-compatible chat server: deterministic replies, JSON or SSE streaming, latency and fault knobs.

Replies are a pure function of the request (default `echo: <last user message>`), so end-to-end tests can
assert on exact text; faults (HTTP status queue, hang) are scriptable from Python or under `/_fake/...`.
A reply function may return `ToolCall`s instead of text: the fake answers with `tool_calls` (finish
reason `tool_calls`, streamed as OpenAI streams them), and checks the tool protocol as strictly as
OpenAI does — `tools` well formed, `tool_choice` only with tools, every assistant `tool_calls` answered
by one `tool` message per id and no `tool` message without its call (HTTP 400 otherwise).
Images in chat requests (`image_url` parts) are checked and recorded (`ChatRequest.image_urls`); the
media endpoints (transcriptions, speech, image generation) live in llm_media.py, as `FakeLLM.media`.
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
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_devkit.fakes.llm_media import MediaEndpoints, decode_data_url, image_parts, image_url_error
from wxbot_devkit.fakes.server import FakeService, base_arg_parser, serve_forever
from wxbot_devkit.fakes.waiting import wait_until

HANG_POLL_S = 0.05
_PIECES = re.compile(r"\s*\S+\s*|\s+")
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call a scripted reply asks for; `arguments` is sent as given (a str) or JSON-encoded."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_json(self) -> dict[str, Any]:
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": args}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One received /v1/chat/completions call (recorded whether or not a fault answered it)."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    received_at: float  # time.time()
    body: dict[str, Any]

    @property
    def tools(self) -> list[str]:
        """The names of the functions offered (empty when none)."""
        return [t["function"]["name"] for t in self.body.get("tools") or []]

    @property
    def tool_choice(self) -> Any:
        return self.body.get("tool_choice")

    @property
    def may_call_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def tool_results(self) -> dict[str, str]:
        """The `tool` messages since the last assistant message, by tool_call_id (empty unless the
        last thing the model did was to call tools)."""
        found: dict[str, str] = {}
        for message in reversed(self.messages):
            if message.get("role") != "tool":
                break
            found[str(message.get("tool_call_id"))] = content_text(message.get("content"))
        return dict(reversed(found.items()))

    def called(self) -> list[dict[str, Any]]:
        """Every tool call the conversation so far made (each `function` object)."""
        return [c["function"] for m in self.messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]

    @property
    def image_urls(self) -> list[str]:
        """The URLs of every `image_url` part of the request (data URLs included), in order."""
        return [str(part["image_url"]["url"]) for _role, part in image_parts(self.messages)]

    def images(self) -> list[bytes]:
        """The bytes of the images sent inline as base64 data URLs, in order."""
        return [decoded[1] for url in self.image_urls if (decoded := decode_data_url(url)) is not None]

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "messages": self.messages, "stream": self.stream, "received_at": self.received_at}


ReplyFn = Callable[[ChatRequest], "str | list[ToolCall]"]


def tool_protocol_error(body: dict[str, Any]) -> str | None:
    """What OpenAI would reject (400) in the tools and tool messages of a request, else None."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
            return f"'tools' must be an array of at most {MAX_TOOLS} items"
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                return f"Invalid value at tools[{i}]: expected an object of type 'function'"
            if not _FUNCTION_NAME.match(str(function.get("name", ""))):
                return f"Invalid 'tools[{i}].function.name': must match ^[a-zA-Z0-9_-]{{1,64}}$"
            if "parameters" in function and not isinstance(function["parameters"], dict):
                return f"Invalid 'tools[{i}].function.parameters': expected an object"
    if body.get("tool_choice") is not None and not tools:
        return "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
    open_ids: list[str] = []
    for message in body["messages"]:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_ids:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'."
                )
            open_ids.remove(call_id)
            continue
        if open_ids:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(open_ids)}"
            )
        if role == "assistant":
            open_ids = [str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if open_ids:
        return f"tool_call_ids without response messages: {', '.join(open_ids)}"
    return None


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
        self.media = MediaEndpoints(self._authorized, record_limit)  # transcriptions, speech, images

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
        self.media.reset()

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
        problem = tool_protocol_error(body) or image_url_error(messages)
        if problem is not None:
            return openai_error(400, problem, "invalid_request_error")
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
        reply = self.reply(chat)
        calls = [] if isinstance(reply, str) else [c.to_json() for c in reply]
        if calls and not chat.may_call_tools:  # a real model cannot: the script is wrong
            return openai_error(500, "fake script returned tool calls where none may be made", "server_error")
        text = reply if isinstance(reply, str) else ""
        prompt_tokens = sum(count_tokens(content_text(m.get("content"))) + 4 for m in messages if isinstance(m, dict))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(text) + sum(count_tokens(c["function"]["arguments"]) for c in calls),
            "total_tokens": prompt_tokens + count_tokens(text),
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._sse(
                    completion_id,
                    chat.model,
                    text,
                    usage if include_usage else None,
                    self.stream_chunk_delay_s,
                    calls,
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text or None, "tool_calls": calls}
                        if calls
                        else {"role": "assistant", "content": text},
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
                "usage": usage,
            }
        )

    @staticmethod
    async def _sse(
        completion_id: str,
        model: str,
        text: str,
        usage: dict[str, int] | None,
        chunk_delay_s: float = 0.0,
        calls: list[dict[str, Any]] | None = None,
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
        for i, call in enumerate(calls or []):  # as OpenAI streams them: id and name first, then arguments in pieces
            head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
            head["function"]["arguments"] = ""
            yield chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            args = call["function"]["arguments"]
            for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}])
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
        for endpoint, statuses in (spec.get("media_statuses") or {}).items():  # {"images": [500], …}
            self.media.fail_next(str(endpoint), *(int(s) for s in statuses))
        if "media_latency_s" in spec:
            self.media.latency_s = float(spec["media_latency_s"])
        if "transcript" in spec:
            self.media.say(str(spec["transcript"]))
        return JSONResponse(self.stats())

    async def _ctl_requests(self, request: Request) -> Response:
        return JSONResponse({"requests": [r.to_json() for r in self.requests]})

    def build_app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                *self.media.routes(),
                *self.control_routes(self._ctl_faults, self._ctl_requests),
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
