"""The analytics service's JSON API, when ANALYTICS_URL is set (docs/analytics.md): the dashboard
draws its full report (`GET /v1/report`: usage, latency per stage, tokens and cost per model,
answer sources, safety blocks, the A/B variants and their verdict); without it the page says
that analytics is not configured."""

from __future__ import annotations

from typing import Any

from wxbot_common.http_client import HttpError, TracedHttp

REPORT_PATH = "/v1/report"


class AnalyticsClient:
    def __init__(self, base_url: str, http: TracedHttp) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    async def report(self) -> dict[str, Any] | None:
        """The report (default range: the analytics service's), `{"error": why}` when it cannot be
        read; None when not configured."""
        if not self.configured:
            return None
        try:
            async with self._http.request("GET", f"{self.base_url}{REPORT_PATH}", timeout_s=5) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (*HttpError, ValueError) as exc:
            return {"error": f"analytics unreachable ({type(exc).__name__})"}
        if status != 200 or not isinstance(body, dict):
            reason = body.get("error") if isinstance(body, dict) else None
            return {"error": f"analytics answered HTTP {status}: {reason or 'no report'}"}
        return body
