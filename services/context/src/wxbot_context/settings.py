"""Settings of the context service (environment variables, then `.env`)."""

from __future__ import annotations

from pydantic import Field

from wxbot_common.settings import CommonSettings


class ContextSettings(CommonSettings):
    context_http_port: int = Field(8083, description="ops HTTP port: /healthz /readyz /metrics")
    context_grpc_listen: str = Field("", description="gRPC listen address; default: CONTEXT_GRPC_ADDR")
    context_ttl_s: int = Field(3600, description="a conversation idle this long is forgotten")
    context_max_turns: int = Field(50, description="turns kept per conversation")
    context_token_budget: int = Field(24000, description="default history budget (suits a 32K window)")
    context_read_wait_s: float = Field(5.0, description="how long GetHistory waits for the projection")
    context_order_wait_s: float = Field(
        30.0, description="how long GetHistory waits for earlier messages of the conversation to be answered"
    )
    context_pending_stale_s: float = Field(300.0, description="an unanswered message older than this is ignored")

    @property
    def grpc_listen(self) -> str:
        return self.context_grpc_listen or self.context_grpc_addr
