"""Settings of the nlp service (environment variables, then `.env`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from wxbot_common.settings import CommonSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are wxbot, a helpful assistant inside WeCom (企业微信). Answer concisely, in the language the "
    "user writes in. Plain text only: WeCom does not render Markdown in app messages."
)


class NlpSettings(CommonSettings):
    nlp_http_port: int = Field(8082, description="ops HTTP port: /healthz /readyz /metrics")
    llm_base_url: str = Field("", description="OpenAI-compatible endpoint ending in /v1; empty = no LLM")
    llm_api_key: str = Field("", description="bearer token for the LLM endpoint")
    llm_model: str = Field("gpt-4o-mini", description="model name sent to the endpoint")
    llm_timeout_s: float = Field(60.0, description="per-attempt timeout of the LLM request")
    llm_max_tokens: int = Field(1024, description="max tokens of an answer")
    llm_temperature: float = Field(0.7)
    llm_stream: bool = Field(False, description="use streaming (SSE) chat completions")
    llm_retries: int = Field(2, description="retries of a failed LLM call (429, 5xx, timeout), with backoff")
    llm_backoff_base_s: float = Field(0.5, description="first retry delay; doubles, fully jittered")
    llm_breaker_threshold: int = Field(5, description="consecutive failed calls that open the circuit (0 = off)")
    llm_breaker_cooldown_s: float = Field(30.0, description="how long an open circuit skips the LLM")
    llm_fallback_base_url: str = Field("", description="a second endpoint tried when the first is unavailable")
    llm_fallback_api_key: str = Field("", description="its key")
    llm_fallback_model: str = Field("", description="its model (default: LLM_MODEL)")
    nlp_system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="system prompt of every conversation")
    nlp_system_prompt_file: Path | None = Field(None, description="a file holding the system prompt (wins)")
    nlp_variants: str = Field("", description="A/B variants as JSON: [{name, weight, model?, temperature?, ...}]")
    nlp_kb_files: str = Field("", description="FAQ files (YAML or Markdown), comma-separated")
    nlp_kb_min_score: float = Field(0.45, description="knowledge-base confidence needed to use an entry")
    nlp_kb_direct_score: float = Field(0.85, description="confidence above which the entry answers without the LLM")
    nlp_cache_ttl_s: int = Field(3600, description="answer cache for standalone questions; 0 = off")
    nlp_history_budget: int = Field(0, description="history tokens to ask context for; 0 = context's default")
    nlp_concurrency: int = Field(512, description="messages drafted at once per replica")
    nlp_context_timeout_s: float = Field(45.0, description="deadline of the GetHistory call")

    def system_prompt(self) -> str:
        if self.nlp_system_prompt_file is not None:
            return self.nlp_system_prompt_file.read_text(encoding="utf-8").strip()
        return self.nlp_system_prompt
