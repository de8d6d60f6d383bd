"""Settings of the safety service (environment variables, then `.env`)."""

from __future__ import annotations

from pydantic import Field

from wxbot_common.settings import CommonSettings


class SafetySettings(CommonSettings):
    safety_http_port: int = Field(8081, description="ops HTTP port: /healthz /readyz /metrics")
    safety_rate_per_minute: int = Field(20, description="messages a user may send per minute (0 = unlimited)")
    safety_wordlist_files: str = Field(
        "", description="comma-separated lexicon files, one term per line; empty = the shipped default lexicon"
    )
    safety_words: str = Field("", description="extra terms, comma-separated (handy for tests and demos)")
    safety_concurrency: int = Field(256, description="messages checked at once per stage")
