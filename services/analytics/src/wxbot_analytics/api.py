"""The report API (JSON over HTTP), read by people, scripts, Grafana's JSON panels and the console.

Routes and shapes are documented in docs/analytics.md and kept stable: new fields may be added,
none renamed or removed. Every route takes `since`, `until`, `bucket`, `limit` (query.py) and
answers 400 {"error": ...} for anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from wxbot_analytics.query import BadQueryError, ReportQuery, parse_query
from wxbot_analytics.reports import Reports
from wxbot_analytics.store import StoreError

Section = Callable[[Reports, ReportQuery], Any]
Status = Callable[[], Awaitable[dict[str, Any]]]

SECTIONS: dict[str, Section] = {
    "report": lambda r, q: r.full(q),
    "summary": lambda r, q: r.summary(q),
    "usage": lambda r, q: {"bucket": q.bucket, "series": r.usage(q, q.bucket)},
    "latency": lambda r, q: r.latency(q),
    "models": lambda r, q: r.models(q),
    "sources": lambda r, q: r.sources(q),
    "safety": lambda r, q: r.safety(q),
    "questions": lambda r, q: r.questions(q),
    "variants": lambda r, q: dict(zip(("variants", "comparisons"), r.variants(q), strict=True)),
}


def report_routes(reports: Reports, max_range_days: int, status: Status) -> list[BaseRoute]:
    def section_endpoint(section: Section) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if len(request.query_params.getlist("since")) > 1 or len(request.query_params) > 8:
                return JSONResponse({"error": "repeated or too many parameters"}, status_code=400)
            try:
                q = parse_query(dict(request.query_params), max_range_days)
            except BadQueryError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            try:
                body = await asyncio.to_thread(section, reports, q)
            except StoreError as exc:
                return JSONResponse({"error": f"analytics store unavailable: {str(exc)[:200]}"}, status_code=503)
            return JSONResponse(body)

        return endpoint

    async def status_endpoint(_: Request) -> Response:
        return JSONResponse(await status())

    routes: list[BaseRoute] = [
        Route(f"/v1/{name}", section_endpoint(fn), methods=["GET"]) for name, fn in SECTIONS.items()
    ]
    routes.append(Route("/v1/status", status_endpoint, methods=["GET"]))
    return routes


def report_app(routes: list[BaseRoute]) -> Starlette:
    return Starlette(routes=routes)
