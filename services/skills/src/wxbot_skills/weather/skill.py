"""The weather skill: one tool, `weather` (command `/weather 北京`), over an Open-Meteo-compatible API.

    settings = WeatherSettings()
    http = TracedHttp(create_session(settings.max_connections, settings.timeout_s))  # closed by its owner
    await build_weather_skill(settings, http).start(nc)

A place that does not exist is an answer ("no place called X"), not an error; an API that is down,
slow or talking nonsense is a `SkillError` saying so, within `WEATHER_TIMEOUT_S` — well inside the
time nlp gives a call, so the model hears why rather than a bare timeout.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from wxbot_common.http_client import TracedHttp
from wxbot_common.logs import get_logger
from wxbot_skill import Skill, SkillError
from wxbot_skills.weather.open_meteo import OpenMeteo, Place, Upstream
from wxbot_skills.weather.report import Located, not_found, report, trouble
from wxbot_skills.weather.settings import WeatherSettings
from wxbot_skills.weather.wmo import Language

VERSION = "1.0.0"
MAX_DAYS = 7
# Chinese administrative suffixes: "深圳市" may only be indexed as "深圳".
SUFFIXES = ("市", "县", "区", "省")


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


class WeatherLookup:
    """Place → most populous match → current conditions and forecast → words."""

    def __init__(self, api: OpenMeteo, settings: WeatherSettings) -> None:
        self._api = api
        self._settings = settings
        self._log = get_logger("wxbot.skill.weather")

    async def report(self, place: str, days: int, language: Language | None) -> str:
        query = " ".join(place.split())
        chinese = has_chinese(query)
        language = language or ("zh" if chinese else "en")
        timeout_s = self._settings.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):  # both requests together, not each
                located = await self._locate(query, "zh" if chinese else language, deadline)
                if located is None:
                    return not_found(query, language)
                forecast = await self._api.forecast(located.place, days, _left(deadline))
        except TimeoutError:
            self._log.warning("weather_upstream_failed", kind="timeout", timeout_s=timeout_s)
            raise SkillError(trouble(Upstream("timeout"), language, timeout_s)) from None
        except Upstream as exc:
            self._log.warning("weather_upstream_failed", kind=exc.kind, detail=exc.detail)
            raise SkillError(trouble(exc, language, timeout_s)) from None
        return report(located, forecast, days, language, self._settings.attribution)

    async def _locate(self, query: str, language: str, deadline: float) -> Located | None:
        matches = await self._api.search(query, language, _left(deadline))
        if not matches and "," not in query and len(query) > 2 and query.endswith(SUFFIXES):
            matches = await self._api.search(query[:-1], language, _left(deadline))
        if not matches:
            return None
        # The API ranks by its own relevance ("北京" lists villages before the capital): a person
        # asking about a name means, almost always, its best-known bearer.
        best = max(matches, key=_population)
        return Located(query, best, matches, capped=len(matches) >= self._settings.geocoding_count)


def _left(deadline: float) -> float:
    """Seconds left until `deadline` (loop time), for one request's own timeout."""
    return max(0.001, deadline - asyncio.get_running_loop().time())


def _population(place: Place) -> int:
    return place.population or 0


PlaceName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(
        description="a town, city or region, in Chinese or English: 北京, Shanghai, 深圳市; 'name, region' narrows it"
    ),
]
Days = Annotated[int, Field(ge=1, le=MAX_DAYS, description="days of forecast, today first")]
Lang = Annotated[
    Literal["zh", "en"] | None,
    Field(description="language of the report; by default Chinese for a Chinese place name, else English"),
]


def build_weather_skill(settings: WeatherSettings, http_client: TracedHttp) -> Skill:
    """The `weather` skill, ready for `await skill.start(nc)`; `http_client` is the process's shared
    session (the composition root owns and closes it)."""
    lookup = WeatherLookup(OpenMeteo(http_client, settings), settings)
    skill = Skill("weather", VERSION, "Current weather and a short forecast for any place (Open-Meteo)")

    @skill.tool(name="weather", command="/weather")
    async def weather(place: PlaceName, days: Days = 3, language: Lang = None) -> str:
        """Current weather and the forecast for the next days (today first) of a place anywhere in
        the world, named in Chinese or English. Returns a short plain-text report to pass on; when
        several places share the name, the most populous is used and the report says so."""
        return await lookup.report(place, days, language)

    return skill
