"""An Open-Meteo-compatible API: geocoding (`/v1/search`) and forecast (`/v1/forecast`).

Answers are checked as strictly as they are used: a body that is not JSON, too large, or not of
the documented shape is `Upstream("unreadable")`, never a half-filled report. Open-Meteo leaves
empty fields out (no `results` key when nothing matches, no `population` when unknown), and a
value it has no data for is null.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wxbot_common.http_client import TracedHttp
from wxbot_skills.weather.settings import WeatherSettings

MAX_BODY_BYTES = 1 << 20  # a 16-day forecast is ~5 KB; anything near this is not an answer
CURRENT = ("temperature_2m", "relative_humidity_2m", "apparent_temperature", "weather_code", "wind_speed_10m")
DAILY = ("weather_code", "temperature_2m_max", "temperature_2m_min", "precipitation_probability_max")

M = TypeVar("M", bound=BaseModel)
Trouble = Literal["timeout", "unreachable", "rate_limited", "status", "rejected", "unreadable"]


class Upstream(Exception):  # noqa: N818 - read as `raise Upstream("timeout")`
    """The weather API did not give a usable answer; `kind` says how, `detail` what it said."""

    def __init__(self, kind: Trouble, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Place(_Lenient):
    id: int
    name: str = Field(min_length=1)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    # Left out when empty (null from a less careful "compatible" API is taken the same way).
    country: str | None = None
    admin1: str | None = None
    population: int | None = None
    timezone: str | None = None


class _SearchResults(_Lenient):
    results: list[Place] = []


class Current(_Lenient):
    time: str = Field(min_length=16)  # local time, "2026-03-26T16:15"
    temperature_2m: float | None = None
    relative_humidity_2m: float | None = None
    apparent_temperature: float | None = None
    weather_code: int | None = None
    wind_speed_10m: float | None = None


class Daily(_Lenient):
    time: list[str] = Field(min_length=1)  # local dates, "2026-03-26", today first
    weather_code: list[int | None]
    temperature_2m_max: list[float | None]
    temperature_2m_min: list[float | None]
    precipitation_probability_max: list[float | None]

    @model_validator(mode="after")
    def _aligned(self) -> Daily:
        series = (self.weather_code, self.temperature_2m_max, self.temperature_2m_min)
        if any(len(s) != len(self.time) for s in (*series, self.precipitation_probability_max)):
            raise ValueError("daily series of different lengths")
        return self


class Forecast(_Lenient):
    timezone: str = ""
    current: Current
    current_units: dict[str, str] = {}
    daily: Daily
    daily_units: dict[str, str] = {}


class OpenMeteo:
    """One method per endpoint; each call is bounded by `timeout_s` (the caller's time left)."""

    def __init__(self, http: TracedHttp, settings: WeatherSettings) -> None:
        self._http = http
        self._search_url = settings.geocoding_url.rstrip("/") + "/v1/search"
        self._forecast_url = settings.forecast_url.rstrip("/") + "/v1/forecast"
        self._key = {"apikey": settings.api_key} if settings.api_key else {}
        self._count = settings.geocoding_count

    async def search(self, name: str, language: str, timeout_s: float) -> list[Place]:
        """Places matching `name` (in the API's order of relevance); `language` names them and
        chooses which translated names are searched too (a Chinese name needs `zh`)."""
        params: dict[str, str | int] = {
            "name": name,
            "count": self._count,
            "language": language,
            "format": "json",
            **self._key,
        }
        body = await self._get(self._search_url, params, timeout_s)
        return _parse(_SearchResults, body).results

    async def forecast(self, place: Place, days: int, timeout_s: float) -> Forecast:
        params: dict[str, str | int] = {
            "latitude": f"{place.latitude:.4f}",
            "longitude": f"{place.longitude:.4f}",
            "current": ",".join(CURRENT),
            "daily": ",".join(DAILY),
            # The place's own zone (dates and "now" are local); `auto` only when geocoding had none.
            "timezone": place.timezone or "auto",
            "forecast_days": days,
            "temperature_unit": "celsius",
            "wind_speed_unit": "kmh",
            **self._key,
        }
        return _parse(Forecast, await self._get(self._forecast_url, params, timeout_s))

    async def _get(self, url: str, params: dict[str, str | int], timeout_s: float) -> Any:
        try:
            async with self._http.request("GET", url, params=params, timeout_s=timeout_s) as resp:
                raw = await _read_capped(resp)
                status = resp.status
        except TimeoutError as exc:
            raise Upstream("timeout") from exc
        except aiohttp.ClientConnectionError as exc:
            raise Upstream("unreachable", type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise Upstream("unreadable", type(exc).__name__) from exc
        if status == 429:
            raise Upstream("rate_limited")
        if status == 400:  # Open-Meteo's own refusal: {"error": true, "reason": "..."}
            raise Upstream("rejected", _reason(raw))
        if status != 200:
            raise Upstream("status", f"HTTP {status}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise Upstream("unreadable", "not JSON") from exc


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    size = int(resp.headers.get("Content-Length") or 0)
    if size > MAX_BODY_BYTES:
        raise Upstream("unreadable", f"a {size}-byte answer")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_any():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise Upstream("unreadable", f"an answer over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return "HTTP 400"
    reason = body.get("reason") if isinstance(body, dict) else None
    return str(reason)[:200] if reason else "HTTP 400"


def _parse(model: type[M], body: Any) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(root)"
        raise Upstream("unreadable", f"{where}: {first['msg']}") from exc
