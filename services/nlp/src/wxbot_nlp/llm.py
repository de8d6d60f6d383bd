"""OpenAI-compatible chat completions over httpx (OpenAI, DeepSeek, Qwen, Ollama, vLLM, llama.cpp…)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind


class LlmUnavailableError(Exception):
    """The upstream failed in a way a later attempt may not (timeout, 429, 5xx, network)."""


class LlmRejectedError(Exception):
    """The upstream refused the request itself (4xx other than 429): retrying will not help."""


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class ChatBackend(Protocol):
    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...


class OpenAICompatibleBackend:
    """POST {base_url}/chat/completions, non-streaming."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
        max_tokens: int,
        temperature: float,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._host = httpx.URL(base_url).host
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._model = model
        self._timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._max_tokens = max_tokens
        self._temperature = temperature

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One chat completion inside a `chat {model}` span with the gen_ai.* semantic attributes."""
        tracer = trace.get_tracer("wxbot.nlp.llm")
        with tracer.start_as_current_span(
            f"chat {self._model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": self._model,
                "gen_ai.request.max_tokens": self._max_tokens,
                "gen_ai.request.temperature": self._temperature,
                "server.address": self._host,
            },
        ) as span:
            completion = await self._complete(messages)
            span.set_attributes(
                {
                    "gen_ai.response.model": completion.model,
                    "gen_ai.usage.input_tokens": completion.prompt_tokens,
                    "gen_ai.usage.output_tokens": completion.completion_tokens,
                }
            )
            return completion

    async def _complete(self, messages: list[dict[str, str]]) -> Completion:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "stream": False,
        }
        try:
            resp = await self._client.post(self._url, json=body, headers=self._headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise LlmUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise LlmUnavailableError(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise LlmRejectedError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LlmUnavailableError(f"malformed completion: {exc!r}") from exc
        return Completion(
            text=text.strip(),
            model=str(data.get("model") or self._model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
