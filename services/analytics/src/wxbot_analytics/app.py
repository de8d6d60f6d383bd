"""Composition root of the analytics service: store, projection, report API."""

from __future__ import annotations

import asyncio

from wxbot_analytics.api import report_app, report_routes
from wxbot_analytics.projection import Batcher, Projection, ProjectionMetrics, store_inserter, watch_lag
from wxbot_analytics.reports import Reports
from wxbot_analytics.schema import TABLE, ensure_schema
from wxbot_analytics.settings import AnalyticsSettings
from wxbot_analytics.wiring import open_configured_store, report_rules, row_rules
from wxbot_common.nats.topology import ANALYTICS_PROJECTION
from wxbot_common.ops import ops_routes
from wxbot_common.runtime import ServiceRuntime

LAG_EVERY_S = 1.0


async def main() -> None:
    settings = AnalyticsSettings()
    runtime = ServiceRuntime("analytics", settings)
    await runtime.start()

    store = await asyncio.to_thread(open_configured_store, settings)
    await asyncio.to_thread(ensure_schema, store, settings.analytics_retention_days)
    runtime.readiness.set("store", True)
    runtime.log.info("store_open", kind=store.kind, database=store.database, store_text=settings.analytics_store_text)

    async def close_store() -> None:
        await asyncio.to_thread(store.close)

    runtime.on_shutdown(close_store)  # runs after the consumer loop has settled its last batch

    metrics = ProjectionMetrics(runtime.registry)
    batcher = Batcher(store_inserter(store), metrics, settings.analytics_batch_max, settings.analytics_batch_linger_s)
    projection = Projection(batcher, row_rules(settings))
    runtime.consume(ANALYTICS_PROJECTION, projection.handle, concurrency=settings.analytics_concurrency)

    stop_lag = asyncio.Event()
    runtime.background(watch_lag(runtime.js, metrics, stop_lag, LAG_EVERY_S), "analytics-lag")

    async def status() -> dict[str, object]:
        rows = await asyncio.to_thread(store.rows, f"SELECT count() AS n FROM {store.database}.{TABLE} FINAL")
        return {
            "store": store.kind,
            "rows": int(rows[0]["n"]) if rows else 0,
            "lag_events": metrics.lag_events,
            "inserted_since_start": metrics.inserted_total,
            "store_text": settings.analytics_store_text,
            "retention_days": settings.analytics_retention_days,
        }

    reports = Reports(store, report_rules(settings))
    app = report_app(
        [
            *report_routes(reports, settings.analytics_max_range_days, status),
            *ops_routes(runtime.readiness, runtime.registry),
        ]
    )
    await runtime.serve_http(app, settings.analytics_port, host=settings.bind_host)
    await runtime.run_until_stopped()
