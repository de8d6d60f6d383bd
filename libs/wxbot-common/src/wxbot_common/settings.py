"""Settings every service shares; each service subclasses with its own fields.

Variable names are part of the product's interface (architecture.md): they are read from the
environment first, then from a `.env` file in the working directory.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Infrastructure endpoints and operational knobs common to all services."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server(s), comma-separated")
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    context_grpc_addr: str = Field("127.0.0.1:50051", description="where nlp finds context")
    log_level: str = Field("INFO")
    log_format: str = Field("json", description="json (production) or console (humans)")
    http_host: str = Field("127.0.0.1", description="bind address of the ops HTTP port")
    stream_max_age_days: float = Field(30.0, description="how long the event log keeps events")
    stream_replicas: int = Field(1, description="JetStream replicas of the streams (3 in production)")
    shutdown_grace_s: float = Field(20.0, description="how long in-flight work may finish on SIGTERM")
    media_ttl_s: float = Field(
        3 * 86400.0, gt=0, description="how long the media blob store keeps a file (WeCom media ids last 3 days)"
    )
    media_max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="the largest file the media store takes")
    cpu_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="lower this process's CPU priority (Linux nice) so that, on a busy shared host, "
        "the gateway's answers to WeCom run first",
    )

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]
