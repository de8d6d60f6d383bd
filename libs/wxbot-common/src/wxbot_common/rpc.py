"""grpc.aio server and channel helpers with the standard health and reflection services."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # the documented `health.aio` alias
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from wxbot_common.red_metrics import GrpcRedMetrics

HEALTH_SERVICE = "grpc.health.v1.Health"


def create_server(addr: str, registry: CollectorRegistry | None = None) -> tuple[grpc.aio.Server, HealthServicer]:
    """A server listening on `addr` with health (NOT_SERVING until the app says so) and, given a
    registry, RED metrics of its methods."""
    interceptors = [GrpcRedMetrics(registry)] if registry is not None else []
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(addr)
    return server, servicer


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    reflection.enable_server_reflection([*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME], server)


async def set_serving(servicer: HealthServicer, services: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *services]:
        await servicer.set(name, status)


def create_channel(addr: str) -> grpc.aio.Channel:
    """A channel that spreads calls over every resolved address (`dns:///context-headless:50051`)."""
    return grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ],
    )
