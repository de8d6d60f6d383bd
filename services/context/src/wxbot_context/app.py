"""Composition root of the context service."""

from __future__ import annotations

from wxbot_common.red_metrics import GrpcRedMetrics
from wxbot_common.redis_client import create_redis
from wxbot_common.rpc import BatchItems, create_server, enable_reflection, observe_servicer, set_serving
from wxbot_common.runtime import ServiceRuntime
from wxbot_context.grpc_service import ContextServicer
from wxbot_context.lease import Announcer, ProjectionLease
from wxbot_context.projection import ProjectionMetrics, Projector, Watermark
from wxbot_context.settings import ContextSettings
from wxbot_context.store import ContextStore
from wxbot_proto.context.v1 import context_pb2 as pb
from wxbot_proto.context.v1 import context_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["ContextService"]
SERVICE_NAME = SERVICE.full_name
GET_HISTORY = f"/{SERVICE_NAME}/GetHistory"


async def main() -> None:
    settings = ContextSettings()
    # The projecting replica announces each applied batch on a subject every replica follows; its
    # own announcements need not come back to it (one wake-up and decode less per batch).
    runtime = ServiceRuntime("context", settings, nats_echo=False)
    await runtime.start()

    redis = create_redis(settings.redis_url)
    runtime.on_shutdown(redis.aclose)
    store = ContextStore(redis, settings.context_ttl_s, settings.context_max_turns, settings.context_pending_stale_s)
    watermark = Watermark()
    projector = Projector(
        runtime.js,
        store,
        watermark,
        runtime.tracer,
        ProjectionMetrics(runtime.registry),
        on_applied=Announcer(runtime.nc),
    )
    lease = ProjectionLease(
        redis,
        runtime.nc,
        store,
        watermark,
        settings.replica_id,
        projector.start,
        projector.stop,
        runtime.registry,
        ttl_s=settings.context_lease_ttl_s,
    )
    await lease.start()
    runtime.on_shutdown(lease.stop)
    runtime.readiness.set("projection", True)

    server, health = create_server(settings.grpc_listen)
    red = GrpcRedMetrics(runtime.registry)
    servicer = ContextServicer(
        store, watermark, runtime.publisher, settings, BatchItems(GET_HISTORY, red, runtime.tracer)
    )
    observe_servicer(servicer, SERVICE, red, runtime.tracer, batches={"GetHistories"})
    pb_grpc.add_ContextServiceServicer_to_server(servicer, server)
    enable_reflection(server, [SERVICE_NAME])
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    runtime.log.info("grpc_listening", addr=settings.grpc_listen)

    async def stop_grpc() -> None:
        await set_serving(health, [SERVICE_NAME], False)
        await server.stop(grace=5)

    runtime.on_shutdown(stop_grpc)
    await runtime.serve_http(None, settings.context_http_port)
    await runtime.run_until_stopped()
