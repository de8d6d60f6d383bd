"""Settings of the nlp service (environment variables, then `.env`).

A wrong value stops the service at start with the variable's name in the error, rather than
surfacing later as a failed answer: missing prompt or FAQ files, NLP_VARIANTS that do not parse,
impossible numbers.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from wxbot_common.media.settings import MediaSettings
from wxbot_nlp.media_out import VoiceReply
from wxbot_nlp.resilience import MAX_BACKOFF_S
from wxbot_nlp.skills.mcp_servers import McpServer, parse_servers
from wxbot_nlp.variants import Variant, parse_variants

DEFAULT_SYSTEM_PROMPT = (
    "You are wxbot, a helpful assistant inside WeCom (企业微信). Answer concisely, in the language the "
    "user writes in. Plain text only: WeCom does not render Markdown in app messages."
)


class NlpSettings(MediaSettings):
    nlp_http_port: int = Field(8082, description="ops HTTP port: /healthz /readyz /metrics")
    llm_base_url: str = Field("", description="OpenAI-compatible endpoint ending in /v1; empty = no LLM")
    llm_api_key: str = Field("", description="bearer token for the LLM endpoint")
    llm_model: str = Field("gpt-4o-mini", description="model name sent to the endpoint")
    llm_timeout_s: float = Field(60.0, gt=0, description="timeout of one whole LLM attempt (streamed or not)")
    llm_answer_deadline_s: float = Field(
        60.0,
        gt=0,
        description="the whole answer: every attempt, the waits between them and the fallback; then one apology",
    )
    llm_max_tokens: int = Field(1024, gt=0, description="max tokens of an answer")
    llm_temperature: float = Field(0.7, ge=0)
    llm_stream: bool = Field(False, description="use streaming (SSE) chat completions")
    llm_retries: int = Field(2, ge=0, description="retries of a failed LLM call (429, 5xx, timeout), with backoff")
    llm_backoff_base_s: float = Field(0.5, ge=0, description="first retry delay; doubles, fully jittered")
    llm_breaker_threshold: int = Field(5, ge=0, description="consecutive failed calls that open the circuit (0 = off)")
    llm_breaker_cooldown_s: float = Field(30.0, ge=0, description="how long an open circuit skips the LLM")
    llm_fallback_base_url: str = Field("", description="a second endpoint tried when the first is unavailable")
    llm_fallback_api_key: str = Field("", description="its key")
    llm_fallback_model: str = Field("", description="its model (default: the variant's model)")
    nlp_system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="system prompt of every conversation")
    nlp_system_prompt_file: Path | None = Field(None, description="a file holding the system prompt (wins)")
    nlp_variants: str = Field("", description="A/B variants as JSON: [{name, weight, model?, temperature?, ...}]")
    nlp_kb_files: str = Field("", description="FAQ files (YAML or Markdown), comma-separated")
    nlp_kb_reload_s: float = Field(
        10.0, description="how often NLP_KB_FILES are checked for changes and reloaded (0 = never)"
    )
    nlp_kb_min_score: float = Field(0.45, ge=0, le=1, description="knowledge-base confidence needed to use an entry")
    nlp_kb_direct_score: float = Field(
        0.85, ge=0, le=1, description="confidence above which the entry answers without the LLM"
    )
    nlp_cache_ttl_s: int = Field(3600, ge=0, description="answer cache for standalone questions; 0 = off")
    nlp_history_budget: int = Field(0, ge=0, description="history tokens to ask context for; 0 = context's default")
    nlp_concurrency: int = Field(512, gt=0, description="messages drafted at once per replica")
    nlp_context_timeout_s: float = Field(45.0, gt=0, description="deadline of the GetHistory call")
    nlp_history_batch: int = Field(
        64, ge=1, description="history lookups taken up at the same moment asked in one call; 1 = one call each"
    )
    image_followup_s: float = Field(
        300.0,
        ge=0,
        description="a text question this soon after an image (same conversation) is asked with that image; 0 = off",
    )
    skills_allow: str = Field("", description="skills offered: comma-separated globs on tool or service; empty = all")
    skills_deny: str = Field("", description="skills never offered (globs on tool or service name); wins over allow")
    skills_discovery_interval_s: float = Field(5.0, gt=0, le=6, description="how often skills are discovered")
    skills_call_timeout_s: float = Field(10.0, gt=0, description="the longest one tool call may take")
    skills_max_rounds: int = Field(4, ge=0, description="rounds of tool calls before the model must answer")
    skills_result_max_chars: int = Field(8000, gt=0, description="a tool result longer than this is cut for the model")
    image_tool: bool = Field(
        False, description="offer image generation to the model as the tool draw_image (a tool on every request)"
    )
    image_size: str = Field("1024x1024", description="size asked of the image endpoint")
    image_deadline_s: float = Field(60.0, gt=0, description="one drawing: generation, download, conversion, store")
    image_max_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="a generated image larger than this (or its URL's file) is refused"
    )
    voice_reply: VoiceReply = Field(
        VoiceReply.NEVER, description="speak answers too: never, when_spoken (to voice messages) or always"
    )
    tts_deadline_s: float = Field(15.0, gt=0, description="speech and its conversion; past it the text goes alone")
    skills_mcp_servers: str = Field(
        "", description="MCP servers whose tools are skills: name=url pairs (streamable HTTP), comma-separated"
    )

    @model_validator(mode="after")
    def _check_references(self) -> NlpSettings:
        if self.nlp_system_prompt_file is not None and not self.nlp_system_prompt_file.is_file():
            raise ValueError(f"NLP_SYSTEM_PROMPT_FILE: no such file: {self.nlp_system_prompt_file}")
        missing = [p for p in self.kb_paths if not p.is_file()]
        if missing:
            raise ValueError(f"NLP_KB_FILES: no such file: {', '.join(map(str, missing))}")
        parse_variants(self.nlp_variants)  # raises ValueError naming NLP_VARIANTS
        parse_servers(self.skills_mcp_servers)  # raises ValueError naming SKILLS_MCP_SERVERS
        return self

    def mcp_servers(self) -> list[McpServer]:
        return parse_servers(self.skills_mcp_servers)

    @property
    def kb_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.nlp_kb_files.split(",") if p.strip()]

    def system_prompt(self) -> str:
        if self.nlp_system_prompt_file is not None:
            return self.nlp_system_prompt_file.read_text(encoding="utf-8").strip()
        return self.nlp_system_prompt

    def variants(self) -> list[Variant]:
        """The A/B variants with this deployment's model, temperature and prompt filled in."""
        prompt = self.system_prompt()
        return [v.resolve(self.llm_model, self.llm_temperature, prompt) for v in parse_variants(self.nlp_variants)]

    def llm_budget_s(self) -> float:
        """The longest one answer may take: every attempt timing out, the waits between them and
        the fallback's attempt, cut to LLM_ANSWER_DEADLINE_S."""
        attempts = self.llm_retries + 1
        fallback = self.llm_timeout_s if self.llm_fallback_base_url else 0.0
        spent = attempts * self.llm_timeout_s + self.llm_retries * MAX_BACKOFF_S + fallback
        return min(spent, self.llm_answer_deadline_s)
