"""Settings of the nlp service (environment variables, then `.env`)."""

from __future__ import annotations

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
    llm_timeout_s: float = Field(60.0, description="per-call timeout of the LLM request")
    llm_max_tokens: int = Field(1024, description="max tokens of an answer")
    llm_temperature: float = Field(0.7)
    nlp_system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="system prompt of every conversation")
    nlp_history_budget: int = Field(0, description="history tokens to ask context for; 0 = context's default")
    nlp_concurrency: int = Field(512, description="messages drafted at once per replica")
    nlp_context_timeout_s: float = Field(45.0, description="deadline of the GetHistory call")
