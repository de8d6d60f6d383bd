"""Settings of the context service (environment variables, then `.env`)."""

from __future__ import annotations

import os
import socket

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
    context_replica_id: str = Field(
        "",
        description="this replica's name for the projection lease; default POD_NAME (stable across container "
        "restarts, so a restarted pod takes its lease straight back), else hostname:pid",
    )
    context_lease_ttl_s: float = Field(
        5.0, gt=0.5, description="a dead projecting replica is replaced after at most this long"
    )

    @property
    def replica_id(self) -> str:
        if self.context_replica_id:
            return self.context_replica_id
        pod = os.environ.get("POD_NAME", "")
        return pod or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def grpc_listen(self) -> str:
        return self.context_grpc_listen or self.context_grpc_addr
