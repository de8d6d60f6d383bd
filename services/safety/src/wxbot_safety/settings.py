"""Settings of the safety service (environment variables, then `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wxbot_common.settings import CommonSettings


class SafetySettings(CommonSettings):
    safety_http_port: int = Field(8081, description="ops HTTP port: /healthz /readyz /metrics")
    safety_rate_per_minute: int = Field(20, description="messages a user may send per minute (0 = unlimited)")
    safety_rate_per_day: int = Field(500, description="messages a user may send per UTC day (0 = unlimited)")
    safety_redis_failure: Literal["open", "closed"] = Field(
        "open", description="when the rate counters are unreachable: let messages through, or refuse them"
    )
    safety_wordlist_files: str = Field(
        "", description="comma-separated lexicon files, one term per line; empty = the shipped default lexicon"
    )
    safety_words: str = Field("", description="extra terms, comma-separated (handy for tests and demos)")
    safety_lexicon_reload_s: float = Field(
        10.0, description="how often lexicon files are checked for changes (0 = never reload)"
    )
    safety_output_action: Literal["mask", "notice"] = Field(
        "mask", description="a listed term in a drafted reply: mask it with ＊, or replace the reply by a notice"
    )
    safety_injection_action: Literal["flag", "block"] = Field(
        "flag", description="suspected prompt injection: flag it on the event and a metric, or block it"
    )
    safety_blocked_users: str = Field("", description="comma-separated user ids whose messages are dropped silently")
    safety_concurrency: int = Field(256, description="messages checked at once per stage")
