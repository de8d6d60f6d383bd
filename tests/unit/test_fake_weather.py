"""The fake Open-Meteo over real HTTP: search rules, forecast shape and refusals, the fault knobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from wxbot_devkit.fakes.weather import Conditions, Day, FakeOpenMeteo

pytestmark = pytest.mark.timeout(30)

CAPITAL = (39.9075, 116.39723)
CURRENT = "temperature_2m,relative_humidity_2m,apparent_temperature,weather_code,wind_speed_10m"
DAILY = "weather_code,temperature_2m_max,temperature_2m_min,precipitation_probability_max"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakeOpenMeteo]:
    async with FakeOpenMeteo() as fake:
        yield fake


@pytest.fixture
async def fake(server: FakeOpenMeteo) -> FakeOpenMeteo:
    server.reset()
    return server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def search(http: httpx.AsyncClient, fake: FakeOpenMeteo, **params: Any) -> httpx.Response:
    return await http.get(f"{fake.base_url}/v1/search", params=params)


async def forecast(http: httpx.AsyncClient, fake: FakeOpenMeteo, **params: Any) -> httpx.Response:
    query = {"latitude": CAPITAL[0], "longitude": CAPITAL[1], "current": CURRENT, "daily": DAILY, **params}
    return await http.get(f"{fake.base_url}/v1/forecast", params=query)


# -- search -------------------------------------------------------------------------------------------


async def test_a_chinese_name_is_found_with_language_zh_only_and_in_gazetteer_order(
    fake: FakeOpenMeteo, http: httpx.AsyncClient
) -> None:
    found = (await search(http, fake, name="北京", language="zh")).json()["results"]
    assert [(p["name"], p.get("admin1"), p.get("population")) for p in found] == [
        ("北京", "重庆市", None),  # no population: the key is left out, as Open-Meteo leaves out empty fields
        ("北京", "四川", None),
        ("北京", "北京市", 18960744),
    ]
    assert found[2]["country"] == "中国" and found[2]["timezone"] == "Asia/Shanghai"
    assert "results" not in (await search(http, fake, name="北京", language="en")).json()


async def test_name_length_rules_count_country_and_area_filters(fake: FakeOpenMeteo, http: httpx.AsyncClient) -> None:
    assert "results" not in (await search(http, fake, name="L")).json()  # one character finds nothing
    assert "results" not in (await search(http, fake, name="Lo")).json()  # two: exact names only
    assert len((await search(http, fake, name="Lon")).json()["results"]) == 2  # three or more: a prefix
    assert len((await search(http, fake, name="London", count=1)).json()["results"]) == 1
    [gb] = (await search(http, fake, name="London", countryCode="GB")).json()["results"]
    assert gb["admin1"] == "England"
    [ontario] = (await search(http, fake, name="London, Ontario")).json()["results"]
    assert ontario["country"] == "Canada"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"name": "Berlin", "count": 0}, "Parameter count must be between 1 and 100."),
        ({"name": "Berlin", "count": 101}, "Parameter count must be between 1 and 100."),
        ({"count": 5}, "Value of type 'String' required for key 'name'."),
    ],
)
async def test_search_refuses_what_open_meteo_refuses(
    fake: FakeOpenMeteo, http: httpx.AsyncClient, params: dict[str, Any], reason: str
) -> None:
    resp = await search(http, fake, **params)
    assert resp.status_code == 400 and resp.json() == {"error": True, "reason": reason}


# -- forecast -----------------------------------------------------------------------------------------


async def test_a_forecast_has_the_documented_shape_in_local_time(fake: FakeOpenMeteo, http: httpx.AsyncClient) -> None:
    body = (await forecast(http, fake, timezone="Asia/Shanghai", forecast_days=3)).json()
    assert body["timezone"] == "Asia/Shanghai" and body["utc_offset_seconds"] == 8 * 3600
    assert set(body["current"]) == {"time", "interval", *CURRENT.split(",")}
    assert body["current_units"]["temperature_2m"] == "°C" and body["current_units"]["wind_speed_10m"] == "km/h"
    assert len(body["current"]["time"]) == 16  # "2026-03-26T16:15": local, minutes, no offset
    daily = body["daily"]
    assert set(daily) == {"time", *DAILY.split(",")} and all(len(v) == 3 for v in daily.values())
    assert daily["time"][0] == body["current"]["time"][:10]  # today first


async def test_scripted_conditions_and_units(fake: FakeOpenMeteo, http: httpx.AsyncClient) -> None:
    fake.set_conditions(*CAPITAL, Conditions(3, 10.0, 8.0, 55, 36.0, (Day(61, 12.0, 4.0, None),)))
    body = (await forecast(http, fake, timezone="auto", temperature_unit="fahrenheit", wind_speed_unit="ms")).json()
    assert body["timezone"] == "Asia/Shanghai"  # auto: the zone of the place at those coordinates
    assert body["current"]["weather_code"] == 3 and body["current"]["temperature_2m"] == 50.0
    assert body["current"]["wind_speed_10m"] == 10.0 and body["current_units"]["temperature_2m"] == "°F"
    assert body["daily"]["weather_code"] == [61] * 7  # the default 7 days, the scripted day repeated
    assert body["daily"]["precipitation_probability_max"] == [None] * 7  # no data is null


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"current": "tempeture_2m"}, "Cannot initialize WeatherVariable from invalid String value tempeture_2m"),
        ({"daily": "weather_code,sunshine"}, "invalid String value sunshine for key daily"),
        ({"latitude": 91}, "Latitude must be in range of -90 to 90°. Given: 91.0."),
        ({"timezone": "Mars/Olympus"}, "Invalid timezone"),
        ({"forecast_days": 17}, "Forecast days is invalid. Allowed range 0 to 16."),
    ],
)
async def test_forecast_refuses_what_open_meteo_refuses(
    fake: FakeOpenMeteo, http: httpx.AsyncClient, params: dict[str, Any], reason: str
) -> None:
    resp = await forecast(http, fake, **params)
    assert resp.status_code == 400 and resp.json()["error"] is True and reason in resp.json()["reason"]


# -- faults -------------------------------------------------------------------------------------------


async def test_faults_play_once_each_on_their_endpoint(fake: FakeOpenMeteo, http: httpx.AsyncClient) -> None:
    fake.fail_next(503, "malformed", endpoint="forecast")
    fake.fail_next("misshapen")
    assert (await search(http, fake, name="Berlin")).json()["results"] == "none today"  # the shared queue
    first = await forecast(http, fake)
    assert first.status_code == 503 and first.headers["content-type"].startswith("text/html")  # a proxy's page
    second = await forecast(http, fake)
    assert second.status_code == 200
    with pytest.raises(ValueError):
        second.json()
    assert (await forecast(http, fake)).status_code == 200 and (await search(http, fake, name="Berlin")).json()
    assert fake.calls == {"search": 2, "forecast": 3}


async def test_not_found_latency_and_the_control_api(fake: FakeOpenMeteo, http: httpx.AsyncClient) -> None:
    spec = {"not_found": True, "latency_s": 0.3, "statuses": [429], "endpoint": "search"}
    assert (await http.post(f"{fake.base_url}/_fake/faults", json=spec)).json()["pending_faults"]["search"] == [429]
    assert (await search(http, fake, name="Berlin")).status_code == 429
    started = time.monotonic()
    assert "results" not in (await search(http, fake, name="Berlin")).json()
    assert time.monotonic() - started >= 0.3
    [first, _] = (await http.get(f"{fake.base_url}/_fake/requests")).json()["requests"]
    assert first == {"endpoint": "search", "params": {"name": "Berlin"}}
    await http.post(f"{fake.base_url}/_fake/reset")
    assert (await search(http, fake, name="Berlin")).json()["results"][0]["name"] == "Berlin"


async def test_a_hung_call_is_counted_when_the_client_gives_up(fake: FakeOpenMeteo) -> None:
    fake.hang = True
    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.get(f"{fake.base_url}/v1/search", params={"name": "Berlin"})
    deadline = time.monotonic() + 5
    while fake.abandoned != 1:
        assert time.monotonic() < deadline, "the fake never noticed the client leaving"
        await asyncio.sleep(0.05)
