"""The analytics service's JSON API, when ANALYTICS_URL is set (docs/analytics.md): the dashboard
shows its report as it comes; without it the page says that analytics is not configured."""

from __future__ import annotations

from typing import Any

from wxbot_common.http_client import HttpError, TracedHttp

REPORT_PATHS = ("/api/summary", "/api/ab")


class AnalyticsClient:
    def __init__(self, base_url: str, http: TracedHttp) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    async def report(self) -> dict[str, Any] | None:
        """Each report path's JSON (or why it could not be read); None when not configured."""
        if not self.configured:
            return None
        out: dict[str, Any] = {}
        for path in REPORT_PATHS:
            try:
                async with self._http.request("GET", f"{self.base_url}{path}", timeout_s=5) as resp:
                    out[path] = await resp.json(content_type=None) if resp.status == 200 else {"status": resp.status}
            except (*HttpError, ValueError) as exc:
                out[path] = {"error": f"unreachable ({type(exc).__name__})"}
        return out
