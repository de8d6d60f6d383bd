"""Fake Open-Meteo (replaces https://geocoding-api.open-meteo.com and https://api.open-meteo.com):
`/v1/search` and `/v1/forecast` on one server, with fault knobs.

As strict as the real one where a client could go wrong (research/skills-nats-micro-schedules.md §4):
`count` outside 1–100, unknown variables, a bad `timezone` or coordinates out of range are HTTP 400
`{"error": true, "reason": …}`; empty fields are left out (no `results` key when nothing matches, no
`population` when unknown); a Chinese name is found only with `language=zh` (the real index searches
the requested language's names besides the main ones); 1 character finds nothing, 2 only an exact
name, 3 or more a prefix (the real one matches fuzzily). Matches come in the gazetteer's order, not
by population — as the real ranking does not (`北京` lists two villages before the capital).

Weather is a pure function of the coordinates unless scripted (`set_conditions`), so tests can
assert on exact words. Faults, from Python or under `/_fake/...`: latency, a hang, HTTP statuses
(a 5xx has an HTML body, as a proxy in front would send), a malformed or mis-shaped 200 body, every
place unknown, and the host refusing connections (`refuse_connections`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_devkit.fakes.server import FakeService, base_arg_parser, serve_forever
from wxbot_devkit.fakes.waiting import wait_until

HANG_POLL_S = 0.05
Endpoint = Literal["search", "forecast"]
Fault = int | Literal["malformed", "misshapen"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


CURRENT_VARIABLES = _words(
    """temperature_2m relative_humidity_2m apparent_temperature is_day precipitation rain showers snowfall
    weather_code cloud_cover pressure_msl surface_pressure wind_speed_10m wind_direction_10m wind_gusts_10m"""
)
DAILY_VARIABLES = _words(
    """weather_code temperature_2m_max temperature_2m_min apparent_temperature_max apparent_temperature_min sunrise
    sunset daylight_duration sunshine_duration uv_index_max uv_index_clear_sky_max rain_sum showers_sum snowfall_sum
    precipitation_sum precipitation_hours precipitation_probability_max wind_speed_10m_max wind_gusts_10m_max
    wind_direction_10m_dominant shortwave_radiation_sum et0_fao_evapotranspiration"""
)
UNITS = {
    "temperature": {"celsius": "°C", "fahrenheit": "°F"},
    "wind": {"kmh": "km/h", "ms": "m/s", "mph": "mp/h", "kn": "kn"},
}
WIND_PER_KMH = {"kmh": 1.0, "ms": 1 / 3.6, "mph": 0.621371, "kn": 0.539957}


@dataclass(frozen=True, slots=True)
class Region:
    names: Mapping[str, str]  # language → name; "en" is the main name

    def named(self, language: str) -> str:
        return self.names.get(language) or self.names["en"]


CHINA = Region({"en": "China", "zh": "中国"})
UK = Region({"en": "United Kingdom", "zh": "英国"})
CANADA = Region({"en": "Canada", "zh": "加拿大"})
GERMANY = Region({"en": "Germany", "zh": "德国"})


@dataclass(frozen=True, slots=True)
class FakePlace:
    """One gazetteer entry (GeoNames ids and coordinates of the real places)."""

    id: int
    names: Mapping[str, str]  # language → name; "en" is the main name, searched in any language
    latitude: float
    longitude: float
    country_code: str
    country: Region
    admin1: Region | None
    timezone: str
    population: int = 0
    feature_code: str = "PPL"
    elevation: float = 0.0

    def json(self, language: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.names.get(language) or self.names["en"],
            "latitude": self.latitude,
            "longitude": self.longitude,
            "elevation": self.elevation,
            "feature_code": self.feature_code,
            "country_code": self.country_code,
            "timezone": self.timezone,
            "country": self.country.named(language),
        }
        if self.population:
            body["population"] = self.population
        if self.admin1 is not None:
            body["admin1"] = self.admin1.named(language)
        return body


def _place(
    id_: int, en: str, zh: str, lat: float, lon: float, country: Region, admin1: tuple[str, str], tz: str, pop: int = 0
) -> FakePlace:
    code = {"China": "CN", "United Kingdom": "GB", "Canada": "CA", "Germany": "DE"}[country.names["en"]]
    admin = Region({"en": admin1[0], "zh": admin1[1]})
    return FakePlace(id_, {"en": en, "zh": zh}, lat, lon, code, country, admin, tz, pop, "PPLA" if pop else "PPL")


GAZETTEER: tuple[FakePlace, ...] = (
    _place(8404324, "Beijing", "北京", 30.72608, 108.67483, CHINA, ("Chongqing", "重庆市"), "Asia/Shanghai"),
    _place(10196578, "Beijing", "北京", 30.8527, 104.0567, CHINA, ("Sichuan", "四川"), "Asia/Shanghai"),
    _place(1816670, "Beijing", "北京", 39.9075, 116.39723, CHINA, ("Beijing", "北京市"), "Asia/Shanghai", 18960744),
    _place(1796236, "Shanghai", "上海", 31.22222, 121.45806, CHINA, ("Shanghai", "上海市"), "Asia/Shanghai", 24874500),
    _place(1795565, "Shenzhen", "深圳", 22.54554, 114.0683, CHINA, ("Guangdong", "广东省"), "Asia/Shanghai", 17494398),
    _place(1809858, "Guangzhou", "广州", 23.11667, 113.25, CHINA, ("Guangdong", "广东省"), "Asia/Shanghai", 16096724),
    _place(6058560, "London", "伦敦", 42.98339, -81.23304, CANADA, ("Ontario", "安大略省"), "America/Toronto", 422324),
    _place(2643743, "London", "伦敦", 51.50853, -0.12574, UK, ("England", "英格兰"), "Europe/London", 8961989),
    _place(2950159, "Berlin", "柏林", 52.52437, 13.41053, GERMANY, ("Land Berlin", "柏林"), "Europe/Berlin", 3426354),
)


@dataclass(frozen=True, slots=True)
class Day:
    weather_code: int
    temperature_max: float
    temperature_min: float
    precipitation_probability: int | None


@dataclass(frozen=True, slots=True)
class Conditions:
    """The weather at one spot: now, and day by day from today (repeated when more days are asked)."""

    weather_code: int
    temperature: float
    apparent_temperature: float
    relative_humidity: int
    wind_speed_kmh: float
    days: tuple[Day, ...]


def default_conditions(latitude: float, longitude: float) -> Conditions:
    """Plausible, stable weather from the coordinates alone (colder towards the poles)."""
    seed = int(abs(latitude * 100) + abs(longitude * 10))
    codes = (0, 1, 2, 3, 61, 80)
    base = round(28 - abs(latitude) * 0.45, 1)
    days = tuple(
        Day(
            codes[(seed + i) % len(codes)],
            round(base + 3 + i % 2, 1),
            round(base - 6 + i % 3, 1),
            (seed * 7 + i * 30) % 101,
        )
        for i in range(4)
    )
    return Conditions(codes[seed % len(codes)], base, round(base - 1.5, 1), 40 + seed % 50, float(5 + seed % 20), days)


@dataclass(frozen=True, slots=True)
class WeatherRequest:
    """One received call, whether or not a fault answered it."""

    endpoint: Endpoint
    params: dict[str, str]
    received_at: float  # time.time()


def om_error(reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": True, "reason": reason}, status_code=status)


class _Refused(Exception):  # noqa: N818 - control flow inside the fake: answer with this 400
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Faults:
    queues: dict[str, deque[Fault]] = field(
        default_factory=lambda: {"search": deque(), "forecast": deque(), "any": deque()}
    )

    def pop(self, endpoint: Endpoint) -> Fault | None:
        for key in (endpoint, "any"):
            if self.queues[key]:
                return self.queues[key].popleft()
        return None


class FakeOpenMeteo(FakeService):
    """State and ASGI app of the fake. Thread-safe: the app may serve on another thread than the test."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        places: tuple[FakePlace, ...] = GAZETTEER,
        record_limit: int = 100_000,
    ) -> None:
        super().__init__()
        self.places = places
        self._default_latency_s = latency_s
        self.latency_s = latency_s
        self.hang = False  # calls park without an answer until the client hangs up or this is cleared
        self.not_found = False  # every search finds nothing
        self._lock = threading.Lock()
        self._faults = _Faults()
        self._conditions: dict[tuple[float, float], Conditions] = {}
        self._requests: deque[WeatherRequest] = deque(maxlen=record_limit)
        self.calls = {"search": 0, "forecast": 0}
        self.abandoned = 0

    # -- knobs -------------------------------------------------------------------------------------

    def fail_next(self, *faults: Fault, endpoint: Endpoint | None = None) -> None:
        """The next len(faults) calls (of `endpoint`, or of either) answer an HTTP status, a
        `malformed` 200 (cut-off JSON) or a `misshapen` one (JSON, not the documented shape)."""
        with self._lock:
            self._faults.queues[endpoint or "any"].extend(faults)

    def set_conditions(self, latitude: float, longitude: float, conditions: Conditions) -> None:
        """The weather a forecast for these coordinates (as the gazetteer has them) returns."""
        with self._lock:
            self._conditions[(round(latitude, 2), round(longitude, 2))] = conditions

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults = _Faults()
            self._conditions.clear()
            self.calls = {"search": 0, "forecast": 0}
            self.abandoned = 0
            self.latency_s = self._default_latency_s
            self.hang = False
            self.not_found = False

    # -- inspection --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[WeatherRequest]:
        with self._lock:
            return list(self._requests)

    async def wait_for_requests(self, n: int = 1, timeout: float = 5.0) -> list[WeatherRequest]:  # noqa: ASYNC109
        return await wait_until(
            lambda: reqs if len(reqs := self.requests) >= n else None,
            timeout,
            f"{n} weather request(s) (have {len(self.requests)})",
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "pending_faults": {k: list(v) for k, v in self._faults.queues.items()},
                "latency_s": self.latency_s,
                "hang": self.hang,
                "not_found": self.not_found,
                "abandoned": self.abandoned,
            }

    # -- protocol ----------------------------------------------------------------------------------

    async def _serve(self, endpoint: Endpoint, request: Request) -> Response | None:
        """Record the call and play any fault; None when the real answer should follow."""
        with self._lock:
            self.calls[endpoint] += 1
            self._requests.append(WeatherRequest(endpoint, dict(request.query_params), time.time()))
            fault = self._faults.pop(endpoint)
        while self.hang and not self._closing:
            if await request.is_disconnected():
                with self._lock:
                    self.abandoned += 1
                return Response(status_code=499)
            await asyncio.sleep(HANG_POLL_S)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault == "malformed":
            return Response(b'{"results": [{"id": 1816670, "name": "Bei', media_type="application/json")
        if fault == "misshapen":
            return JSONResponse({"results": "none today", "current": [], "daily": 42})
        if isinstance(fault, int):
            if fault >= 500:
                html = f"<html><body><h1>{fault} Bad Gateway</h1>fake</body></html>"
                return Response(html, status_code=fault, media_type="text/html")
            return om_error(f"fake error {fault}", fault)
        return None

    async def _search(self, request: Request) -> Response:
        if (faulted := await self._serve("search", request)) is not None:
            return faulted
        query = request.query_params
        if "name" not in query:
            return om_error("Value of type 'String' required for key 'name'.")
        try:
            count = int(query.get("count", "10"))
        except ValueError:
            return om_error("Value of type 'Int' required for key 'count'.")
        if not 1 <= count <= 100:
            return om_error("Parameter count must be between 1 and 100.")
        if query.get("format", "json") != "json":
            return om_error("The fake speaks JSON only.")
        language = query.get("language", "en")
        found = [] if self.not_found else self._find(query["name"], language, query.get("countryCode"))
        body: dict[str, Any] = {"generationtime_ms": 0.5}
        if found:
            body["results"] = [p.json(language) for p in found[:count]]
        return JSONResponse(body)

    def _find(self, text: str, language: str, country_code: str | None) -> list[FakePlace]:
        name, _, area = text.partition(",")
        name, area = name.strip().casefold(), area.strip().casefold()

        def fits(candidate: str) -> bool:
            candidate = candidate.casefold()
            return candidate == name if len(name) <= 2 else candidate.startswith(name)

        def in_area(place: FakePlace) -> bool:
            regions = [place.country, *([place.admin1] if place.admin1 else [])]
            return any(n.casefold().startswith(area) for r in regions for n in r.names.values())

        if len(name) < 2:
            return []
        found = [p for p in self.places if fits(p.names["en"]) or (language in p.names and fits(p.names[language]))]
        if country_code:
            found = [p for p in found if p.country_code == country_code]
        if len(area) > 1:
            found = [p for p in found if in_area(p)]
        return found

    async def _forecast(self, request: Request) -> Response:
        if (faulted := await self._serve("forecast", request)) is not None:
            return faulted
        try:
            return JSONResponse(self._forecast_body(request.query_params))
        except _Refused as refused:
            return om_error(refused.reason)

    def _forecast_body(self, query: Mapping[str, str]) -> dict[str, Any]:
        latitude = _coordinate(query, "latitude", 90)
        longitude = _coordinate(query, "longitude", 180)
        current = _variables(query, "current", CURRENT_VARIABLES)
        daily = _variables(query, "daily", DAILY_VARIABLES)
        days = _int(query, "forecast_days", 7)
        if not 0 <= days <= 16:
            raise _Refused("Forecast days is invalid. Allowed range 0 to 16.")
        temperature_unit = query.get("temperature_unit", "celsius")
        wind_unit = query.get("wind_speed_unit", "kmh")
        if temperature_unit not in UNITS["temperature"] or wind_unit not in UNITS["wind"]:
            raise _Refused("Invalid unit.")
        zone_name = self._zone(query.get("timezone", "GMT"), latitude, longitude)
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise _Refused("Invalid timezone") from None
        with self._lock:
            weather = self._conditions.get((round(latitude, 2), round(longitude, 2)))
        weather = weather or default_conditions(latitude, longitude)
        now = dt.datetime.now(zone)
        offset = now.utcoffset() or dt.timedelta()

        def temp(celsius: float) -> float:
            return celsius if temperature_unit == "celsius" else round(celsius * 9 / 5 + 32, 1)

        body: dict[str, Any] = {
            "latitude": round(latitude, 4),
            "longitude": round(longitude, 4),
            "generationtime_ms": 0.1,
            "utc_offset_seconds": int(offset.total_seconds()),
            "timezone": zone_name,
            "timezone_abbreviation": now.tzname() or "GMT",
            "elevation": 0.0,
        }
        degrees, speed = UNITS["temperature"][temperature_unit], UNITS["wind"][wind_unit]
        if current:
            values: dict[str, Any] = {
                "temperature_2m": temp(weather.temperature),
                "apparent_temperature": temp(weather.apparent_temperature),
                "relative_humidity_2m": weather.relative_humidity,
                "weather_code": weather.weather_code,
                "wind_speed_10m": round(weather.wind_speed_kmh * WIND_PER_KMH[wind_unit], 1),
            }
            units = {"temperature_2m": degrees, "apparent_temperature": degrees, "relative_humidity_2m": "%"}
            units |= {"weather_code": "wmo code", "wind_speed_10m": speed}
            stamp = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
            body["current_units"] = {"time": "iso8601", "interval": "seconds"} | {v: units.get(v, "") for v in current}
            body["current"] = {"time": stamp.strftime("%Y-%m-%dT%H:%M"), "interval": 900} | {
                v: values.get(v, 0.0) for v in current
            }
        if daily:
            today = now.date()
            series: dict[str, list[Any]] = {"time": [(today + dt.timedelta(days=i)).isoformat() for i in range(days)]}
            picked = [weather.days[i % len(weather.days)] for i in range(days)]
            by_name: dict[str, list[Any]] = {
                "weather_code": [d.weather_code for d in picked],
                "temperature_2m_max": [temp(d.temperature_max) for d in picked],
                "temperature_2m_min": [temp(d.temperature_min) for d in picked],
                "precipitation_probability_max": [d.precipitation_probability for d in picked],
            }
            for name in daily:
                series[name] = by_name.get(name, [0.0] * days)
            units = {"temperature_2m_max": degrees, "temperature_2m_min": degrees, "weather_code": "wmo code"}
            body["daily_units"] = {"time": "iso8601"} | {
                v: units.get(v, "%" if "probability" in v else "") for v in daily
            }
            body["daily"] = series
        return body

    def _zone(self, requested: str, latitude: float, longitude: float) -> str:
        if requested != "auto":
            return "GMT" if requested.upper() in ("GMT", "UTC") else requested
        near = [p for p in self.places if abs(p.latitude - latitude) < 0.5 and abs(p.longitude - longitude) < 0.5]
        return near[0].timezone if near else "GMT"

    # -- control API -------------------------------------------------------------------------------

    async def _ctl_faults(self, request: Request) -> Response:
        spec = json.loads(await request.body() or b"{}")
        endpoint = spec.get("endpoint")
        faults: list[Fault] = [int(s) for s in spec.get("statuses", [])]
        faults += [cast(Fault, "malformed")] * int(spec.get("malformed", 0))
        faults += [cast(Fault, "misshapen")] * int(spec.get("misshapen", 0))
        self.fail_next(*faults, endpoint=endpoint if endpoint in ("search", "forecast") else None)
        if "latency_s" in spec:
            self.latency_s = float(spec["latency_s"])
        if "hang" in spec:
            self.hang = bool(spec["hang"])
        if "not_found" in spec:
            self.not_found = bool(spec["not_found"])
        return JSONResponse(self.stats())

    async def _ctl_requests(self, request: Request) -> Response:
        return JSONResponse({"requests": [{"endpoint": r.endpoint, "params": r.params} for r in self.requests]})

    def build_app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v1/search", self._search, methods=["GET"]),
                Route("/v1/forecast", self._forecast, methods=["GET"]),
                *self.control_routes(self._ctl_faults, self._ctl_requests),
            ]
        )


def _coordinate(query: Mapping[str, str], key: str, limit: float) -> float:
    if key not in query:
        raise _Refused(f"Value of type 'Float' required for key '{key}'.")
    try:
        value = float(query[key])
    except ValueError:
        raise _Refused(f"Value of type 'Float' required for key '{key}'.") from None
    if not -limit <= value <= limit:
        raise _Refused(f"{key.capitalize()} must be in range of -{limit:g} to {limit:g}°. Given: {value}.")
    return value


def _variables(query: Mapping[str, str], key: str, known: frozenset[str]) -> list[str]:
    names = [v for v in query.get(key, "").split(",") if v]
    for name in names:
        if name not in known:
            raise _Refused(f"Cannot initialize WeatherVariable from invalid String value {name} for key {key}")
    return names


def _int(query: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(query.get(key, default))
    except ValueError:
        raise _Refused(f"Value of type 'Int' required for key '{key}'.") from None


def main(argv: list[str] | None = None) -> None:
    parser = base_arg_parser("Fake Open-Meteo geocoding and forecast API")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    fake = FakeOpenMeteo(latency_s=args.latency)
    serve_forever(fake.app, args.host, args.port)


if __name__ == "__main__":
    main()
