"""The weather skill against the fake Open-Meteo over real HTTP: reports, namesakes, unknown places,
every upstream failure as a plain SkillError within WEATHER_TIMEOUT_S, and the tool's schema."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_devkit.fakes.weather import Conditions, Day, FakeOpenMeteo
from wxbot_skill import SkillError
from wxbot_skill.tools import FunctionTool
from wxbot_skills.weather import WeatherSettings, build_weather_skill
from wxbot_skills.weather.wmo import WMO_CODES, describe

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 1.0
CAPITAL = (39.9075, 116.39723)
LONDON = (51.50853, -0.12574)
BEIJING_WEATHER = Conditions(
    weather_code=3,
    temperature=12.5,
    apparent_temperature=10.9,
    relative_humidity=60,
    wind_speed_kmh=9.7,
    days=(Day(3, 15.0, 4.4, 10), Day(61, 11.6, 2.5, 80), Day(0, 17.0, -0.4, None)),
)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakeOpenMeteo]:
    async with FakeOpenMeteo() as fake:
        yield fake


@pytest.fixture
async def fake(server: FakeOpenMeteo) -> FakeOpenMeteo:
    server.reset()
    server.set_conditions(*CAPITAL, BEIJING_WEATHER)
    if server.offline:
        await server.accept_connections()
    return server


@pytest.fixture
async def http() -> AsyncIterator[TracedHttp]:
    async with TracedHttp(create_session(4, TIMEOUT_S)) as client:
        yield client


def settings(fake: FakeOpenMeteo, **overrides: Any) -> WeatherSettings:
    values = {"geocoding_url": fake.base_url, "forecast_url": fake.base_url + "/", "timeout_s": TIMEOUT_S}
    return WeatherSettings.model_validate(values | overrides)


def weather_tool(fake: FakeOpenMeteo, http: TracedHttp, **overrides: Any) -> FunctionTool:
    [tool] = build_weather_skill(settings(fake, **overrides), http).tools
    return tool


async def call(tool: FunctionTool, **args: Any) -> str:
    """What the model (or the user of /weather) reads: the tool's JSON result, a string."""
    result = json.loads(await tool.invoke(json.dumps(args, ensure_ascii=False).encode()))
    assert isinstance(result, str)
    return result


# -- reports ------------------------------------------------------------------------------------------


async def test_beijing_in_chinese_is_the_capital_with_its_namesakes_stated(
    fake: FakeOpenMeteo, http: TracedHttp
) -> None:
    report = await call(weather_tool(fake, http), place="北京")
    lines = report.splitlines()
    assert lines[0] == "北京（中国 北京市）天气"
    assert lines[1].endswith("：阴，12.5°C，体感 10.9°C，湿度 60%，风速 10 km/h")
    assert lines[1].startswith("现在（当地时间 ")
    assert lines[2].startswith("今天 ") and lines[2].endswith("：阴，4~15°C，降水概率 10%")
    assert lines[3].startswith("明天 ") and lines[3].endswith("：小雨，2~12°C，降水概率 80%")
    assert lines[4].startswith("后天 ") and lines[4].endswith("：晴，0~17°C")  # no probability known: not made up
    assert lines[5] == (
        "注：“北京”匹配到 3 个地点，这里是人口最多的一个；其他如 北京（中国 重庆市）、北京（中国 四川）。"
        "要查别处，请写“北京, 重庆市”。"
    )
    assert lines[6] == "天气数据：Open-Meteo.com"
    searched, forecasted = fake.requests
    assert searched.params["name"] == "北京" and searched.params["language"] == "zh"
    assert (forecasted.params["latitude"], forecasted.params["longitude"]) == ("39.9075", "116.3972")
    assert forecasted.params["timezone"] == "Asia/Shanghai" and forecasted.params["forecast_days"] == "3"


async def test_an_english_name_gets_an_english_report_naming_the_other_london(
    fake: FakeOpenMeteo, http: TracedHttp
) -> None:
    fake.set_conditions(*LONDON, Conditions(80, -0.04, -3.2, 90, 20.0, (Day(71, 1.4, -2.6, 95),)))
    report = await call(weather_tool(fake, http), place="London", days=2)
    lines = report.splitlines()
    assert lines[0] == "London (England, United Kingdom) weather"
    assert lines[1].endswith("): slight rain showers, 0.0°C, feels like -3.2°C, humidity 90%, wind 20 km/h")
    assert lines[2].startswith("Today, ") and lines[2].endswith(": slight snow, -3 to 1°C, 95% chance of precipitation")
    assert lines[3].startswith("Tomorrow, ")
    assert lines[4] == (
        "Note: 2 places match “London”; this is the most populous. Others: London (Ontario, Canada). "
        "For another, write “London, Ontario”."
    )
    assert lines[5] == "Weather data by Open-Meteo.com" and len(lines) == 6


async def test_the_language_asked_for_wins_and_a_narrowed_name_is_not_ambiguous(
    fake: FakeOpenMeteo, http: TracedHttp
) -> None:
    tool = weather_tool(fake, http)
    report = await call(tool, place="London, Ontario", language="zh", days=1)
    assert report.splitlines()[0] == "伦敦（加拿大 安大略省）天气"
    assert "注：" not in report and len(report.splitlines()) == 4
    assert fake.requests[0].params["language"] == "zh"


async def test_a_city_written_with_its_suffix_is_found_without_it(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    report = await call(weather_tool(fake, http), place="  深圳市 ", days=7)
    assert report.splitlines()[0] == "深圳（中国 广东省）天气" and len(report.splitlines()) == 1 + 1 + 7 + 1
    assert [r.params.get("name") for r in fake.requests] == ["深圳市", "深圳", None]


async def test_the_attribution_and_the_api_key_are_the_deployments(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    report = await call(weather_tool(fake, http, attribution="", api_key="k-123"), place="Shanghai", days=1)
    assert report.splitlines()[0] == "Shanghai (China) weather" and "Open-Meteo" not in report
    assert [r.params["apikey"] for r in fake.requests] == ["k-123", "k-123"]


async def test_a_code_outside_the_wmo_table_is_named_not_guessed(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    fake.set_conditions(*CAPITAL, Conditions(42, 1.0, 1.0, 1, 1.0, (Day(42, 2.0, 1.0, 0),)))
    report = await call(weather_tool(fake, http), place="北京", days=1)
    assert "：天气代码 42，1.0°C" in report and "：天气代码 42，1~2°C" in report


def test_every_wmo_code_has_words_in_both_languages() -> None:
    assert all(zh and en and zh != en for zh, en in WMO_CODES.values())
    assert (describe(95, "zh"), describe(95, "en"), describe(None, "en")) == (
        "雷阵雨",
        "thunderstorm",
        "conditions unknown",
    )


# -- no such place ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "answer"),
    [
        ("Atlantis", "No place called “Atlantis” was found."),
        ("亚特兰蒂斯", "找不到叫“亚特兰蒂斯”的地方。"),
        ("北", "找不到叫“北”的地方。"),  # one character: the API finds nothing by design
    ],
)
async def test_an_unknown_place_is_a_plain_answer_and_no_forecast_is_asked(
    fake: FakeOpenMeteo, http: TracedHttp, place: str, answer: str
) -> None:
    assert (await call(weather_tool(fake, http), place=place)).startswith(answer)
    assert {r.endpoint for r in fake.requests} == {"search"}


async def test_a_geocoder_that_knows_nothing_today_is_no_place_either(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    fake.not_found = True
    assert (await call(weather_tool(fake, http), place="Berlin")).startswith("No place called “Berlin”")


# -- the upstream failing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "endpoint", "error"),
    [
        (503, "search", "the weather service failed (HTTP 503); try again later"),
        (502, "forecast", "the weather service failed (HTTP 502); try again later"),
        (429, "search", "the weather service is limiting requests right now; try again in a minute"),
        (400, "forecast", "the weather service refused the request: fake error 400"),
        ("malformed", "search", "the weather service sent an answer that could not be read"),
        ("misshapen", "search", "the weather service sent an answer that could not be read"),
        ("misshapen", "forecast", "the weather service sent an answer that could not be read"),
    ],
)
async def test_an_upstream_failure_is_a_skill_error_saying_what_failed(
    fake: FakeOpenMeteo, http: TracedHttp, fault: int | str, endpoint: Any, error: str
) -> None:
    fake.fail_next(fault, endpoint=endpoint)  # type: ignore[arg-type]
    with pytest.raises(SkillError) as raised:
        await call(weather_tool(fake, http), place="Berlin")
    assert str(raised.value) == error


async def test_an_error_speaks_the_language_of_the_question(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    fake.fail_next(500)
    with pytest.raises(SkillError, match=r"^天气服务出错（HTTP 500），请稍后再试$"):
        await call(weather_tool(fake, http), place="上海")


@pytest.mark.parametrize("mode", ["slow", "hung", "both calls slow"])
async def test_a_slow_or_hung_upstream_is_an_error_within_the_timeout(
    fake: FakeOpenMeteo, http: TracedHttp, mode: str
) -> None:
    # Each call alone would fit the budget in the last case: the deadline is for both together.
    fake.latency_s = {"slow": 3.0, "hung": 0.0, "both calls slow": 0.6}[mode]
    fake.hang = mode == "hung"
    started = time.monotonic()
    with pytest.raises(SkillError, match=r"^the weather service did not answer within 1 s; try again later$"):
        await call(weather_tool(fake, http), place="Berlin")
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 0.5


async def test_an_unreachable_upstream_is_an_error_at_once(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    await fake.refuse_connections()
    started = time.monotonic()
    with pytest.raises(SkillError, match=r"^the weather service cannot be reached; try again later$"):
        await call(weather_tool(fake, http), place="Berlin")
    assert time.monotonic() - started < TIMEOUT_S


# -- the tool as offered ------------------------------------------------------------------------------


async def test_the_tool_is_weather_with_a_command_and_a_checked_schema(fake: FakeOpenMeteo, http: TracedHttp) -> None:
    tool = weather_tool(fake, http)
    assert (tool.name, tool.command) == ("weather", "/weather")
    schema = tool.parameters
    assert schema["required"] == ["place"] and schema["properties"]["days"]["maximum"] == 7
    for bad in ({"place": ""}, {"place": "x" * 101}, {"place": "北京", "days": 0}, {"place": "北京", "when": "now"}):
        with pytest.raises(ValidationError):
            await call(tool, **bad)
    assert fake.requests == []  # refused before any upstream call


def test_the_settings_are_read_from_weather_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WeatherSettings().geocoding_url == "https://geocoding-api.open-meteo.com"  # the public service
    assert WeatherSettings().forecast_url == "https://api.open-meteo.com"
    monkeypatch.setenv("WEATHER_GEOCODING_URL", "http://127.0.0.1:9/geo")
    monkeypatch.setenv("WEATHER_FORECAST_URL", "http://127.0.0.1:9/fc")
    monkeypatch.setenv("WEATHER_TIMEOUT_S", "2.5")
    loaded = WeatherSettings()
    assert (loaded.geocoding_url, loaded.forecast_url, loaded.timeout_s) == (
        "http://127.0.0.1:9/geo",
        "http://127.0.0.1:9/fc",
        2.5,
    )
    monkeypatch.setenv("WEATHER_GEOCODING_COUNT", "0")
    with pytest.raises(ValidationError, match="geocoding_count"):
        WeatherSettings()
