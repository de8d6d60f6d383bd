"""OpenAI-compatible chat completions over aiohttp: OpenAI, DeepSeek, Qwen (compatible mode),
Moonshot, Ollama, vLLM, llama.cpp server… — streaming (SSE) or not.

A small client of our own rather than the openai SDK: the SDK costs ~1.9 ms of CPU per call on
the reference box against ~0.15 ms here (wxbot_common.http_client), and this is the one request
every message makes.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from yarl import URL

from wxbot_common.http_client import HttpError, TracedHttp
from wxbot_common.spans import ActiveSpan
from wxbot_nlp.llm import Completion, LlmRejectedError, LlmUnavailableError, Message, ToolCall, ToolChoice


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the upstream asks us to wait: `retry-after-ms` (OpenAI), else `Retry-After` in
    seconds or as an HTTP date; None when it does not say."""
    raw_ms = headers.get("retry-after-ms", "")
    try:
        return max(0.0, float(raw_ms) / 1000)
    except ValueError:
        pass
    raw = headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ToolsJson:
    """The `tools` of a chat request as JSON text, each definition encoded once.

    Every request offers the same few tools (3.6 of a 4 KB body with five skills), and encoding
    them again per call was the largest single cost in nlp's profile (json.dumps, ~6 % of its
    CPU in `bench --scenario burst`). A definition is encoded the first time its dict is seen
    and reused while the same object is offered: the registry and the local tools keep one dict
    per tool for the tool's life and never change it (a changed tool is a new `Tool`). The memo
    holds the dicts it keyed, so an id cannot be reused by another dict while its entry lives.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max_entries = max_entries
        self._memo: dict[int, tuple[Mapping[str, Any], str]] = {}

    def encode(self, tools: Sequence[Mapping[str, Any]]) -> str:
        parts = []
        for tool in tools:
            hit = self._memo.get(id(tool))
            if hit is None or hit[0] is not tool:
                if len(self._memo) >= self._max_entries:
                    self._memo.clear()  # tools came and went (skills redeployed): start again
                hit = (tool, json.dumps(tool))
                self._memo[id(tool)] = hit
            parts.append(hit[1])
        return "[" + ", ".join(parts) + "]"


class OpenAICompatibleBackend:
    """POST {base_url}/chat/completions; one call = one attempt (retries live in resilience.py).

    `timeout_s` bounds the whole attempt, not just each read: a stream that trickles a token
    every few seconds would otherwise never time out.
    """

    def __init__(
        self,
        client: TracedHttp,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
        max_tokens: int,
        temperature: float,
        stream: bool = False,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._host = URL(base_url).host or ""
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._tools_json = ToolsJson()
        self._model = model
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stream = stream
        self._tracer = trace.get_tracer("wxbot.nlp.llm")  # per call, get_tracer cost 2 % of nlp's CPU

    @property
    def model(self) -> str:
        return self._model

    async def complete(
        self,
        messages: list[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion:
        """One chat completion inside a `chat {model}` span with the gen_ai.* semantic attributes;
        with `tools`, the model may answer with tool calls instead of text."""
        span = self._tracer.start_span(f"chat {self._model}", kind=SpanKind.CLIENT)
        with ActiveSpan(span):
            if span.is_recording():
                span.set_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.system": "openai",
                        "gen_ai.request.model": self._model,
                        "gen_ai.request.max_tokens": self._max_tokens,
                        "gen_ai.request.temperature": self._temperature,
                        "server.address": self._host,
                    }
                )
            try:
                async with asyncio.timeout(self._timeout_s):
                    body = self._body(messages, self._stream, tools, tool_choice)
                    completion = await (self._complete_stream(body) if self._stream else self._complete(body))
            except TimeoutError as exc:
                raise LlmUnavailableError(f"no complete answer within {self._timeout_s:g} s", kind="timeout") from exc
            span.set_attributes(
                {
                    "gen_ai.response.model": completion.model,
                    "gen_ai.usage.input_tokens": completion.prompt_tokens,
                    "gen_ai.usage.output_tokens": completion.completion_tokens,
                    "gen_ai.response.finish_reasons": ["tool_calls" if completion.tool_calls else "stop"],
                }
            )
            return completion

    def _body(
        self,
        messages: list[Message],
        stream: bool,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> bytes:
        """The request body; the tools go in as text already encoded (`ToolsJson`)."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not tools:
            return json.dumps(body).encode()
        body["tool_choice"] = tool_choice or "auto"
        return f'{json.dumps(body)[:-1]}, "tools": {self._tools_json.encode(tools)}}}'.encode()

    @staticmethod
    def _check(resp: aiohttp.ClientResponse, body_text: str) -> None:
        if resp.status == 429:
            raise LlmUnavailableError("HTTP 429", retry_after_s(resp.headers), kind="rate_limited")
        if resp.status >= 500:
            raise LlmUnavailableError(f"HTTP {resp.status}", retry_after_s(resp.headers), kind="server_error")
        if resp.status >= 400:
            raise LlmRejectedError(f"HTTP {resp.status}: {body_text[:200]}")

    @staticmethod
    def _transport_error(exc: BaseException) -> LlmUnavailableError:
        if isinstance(exc, TimeoutError):
            return LlmUnavailableError(f"{type(exc).__name__}: {exc}", kind="timeout")
        return LlmUnavailableError(f"{type(exc).__name__}: {exc}", kind="network")

    async def _complete(self, body: bytes) -> Completion:
        try:
            async with self._client.request(
                "POST", self._url, data=body, headers=self._headers, timeout_s=self._timeout_s
            ) as resp:
                raw = await resp.read()
                self._check(resp, raw.decode(errors="replace"))
        except HttpError as exc:
            raise self._transport_error(exc) from exc
        try:
            data = json.loads(raw)
            message = data["choices"][0]["message"]
            text = message.get("content") or ""
            calls = tuple(
                ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                for c in message.get("tool_calls") or []
            )
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LlmUnavailableError(f"malformed completion: {exc!r}", kind="malformed") from exc
        return Completion(
            text=text.strip(),
            model=str(data.get("model") or self._model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            tool_calls=calls,
        )

    async def _complete_stream(self, body: bytes) -> Completion:
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}  # a call streams as pieces keyed by index: id and name, then arguments
        model: str = self._model
        usage: dict[str, Any] = {}
        try:
            async with self._client.request(
                "POST", self._url, data=body, headers=self._headers, timeout_s=self._timeout_s
            ) as resp:
                if resp.status >= 400:
                    self._check(resp, (await resp.read()).decode(errors="replace"))
                async for raw_line in resp.content:
                    line = raw_line.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if chunk.get("error"):  # some servers report a failure mid-stream, after the 200
                        raise LlmUnavailableError(f"error in stream: {str(chunk['error'])[:200]}", kind="server_error")
                    model = str(chunk.get("model") or model)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        parts.append(delta.get("content") or "")
                        for piece in delta.get("tool_calls") or []:
                            call = calls.setdefault(int(piece.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                            function = piece.get("function") or {}
                            call["id"] = piece.get("id") or call["id"]
                            call["name"] = function.get("name") or call["name"]
                            call["arguments"] += function.get("arguments") or ""
        except HttpError as exc:
            raise self._transport_error(exc) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            raise LlmUnavailableError(f"malformed stream: {exc!r}", kind="malformed") from exc
        return Completion(
            text="".join(parts).strip(),
            model=model,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())),
        )
