"""The words the user (or the model) reads: a report, "no such place", or why the lookup failed —
in Chinese or English, plain text (WeCom shows no Markdown)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from wxbot_skills.weather.open_meteo import Daily, Forecast, Place, Upstream
from wxbot_skills.weather.wmo import Language, describe

WEEKDAYS = {"zh": "一二三四五六日", "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
RELATIVE = {"zh": ("今天", "明天", "后天"), "en": ("Today", "Tomorrow")}
OTHERS_SHOWN = 3


@dataclass(frozen=True)
class Located:
    """The place chosen for `query`: the most populous of `matches` (the API's answer, in its order)."""

    query: str
    place: Place
    matches: list[Place]
    capped: bool  # the API may know more matches than it was asked for


def label(place: Place, language: Language) -> str:
    """`北京（中国 北京市）` / `London (England, United Kingdom)`: enough to tell namesakes apart."""
    where = [part for part in (place.admin1, place.country) if part and part != place.name]
    if not where:
        return place.name
    if language == "zh":
        return f"{place.name}（{' '.join(reversed(where))}）"
    return f"{place.name} ({', '.join(where)})"


def report(located: Located, forecast: Forecast, days: int, language: Language, attribution: str) -> str:
    zh = language == "zh"
    shown = min(days, len(forecast.daily.time))  # a "compatible" API may send more than was asked
    lines = [f"{label(located.place, language)}{'天气' if zh else ' weather'}"]
    lines.append(_now(forecast, language))
    today = _date(forecast.current.time[:10])
    lines += [_day(forecast.daily, i, today, forecast.daily_units, language) for i in range(shown)]
    if len(located.matches) > 1:
        lines.append(_ambiguity(located, language))
    if attribution:
        lines.append(f"天气数据：{attribution}" if zh else f"Weather data by {attribution}")
    return "\n".join(lines)


def not_found(query: str, language: Language) -> str:
    if language == "zh":
        return f"找不到叫“{query}”的地方。请换个写法，例如城市的全名或英文名（北京 / Beijing）。"
    return (
        f"No place called “{query}” was found. Try a town or city's full name, in English or Chinese (Beijing / 北京)."
    )


def trouble(error: Upstream, language: Language, timeout_s: float) -> str:
    """Why there is no report, for a SkillError: what failed, never a stack trace."""
    zh = language == "zh"
    match error.kind:
        case "timeout":
            return (
                f"天气服务 {timeout_s:g} 秒内没有回应，请稍后再试"
                if zh
                else (f"the weather service did not answer within {timeout_s:g} s; try again later")
            )
        case "unreachable":
            return "无法连接天气服务，请稍后再试" if zh else "the weather service cannot be reached; try again later"
        case "rate_limited":
            return (
                "天气服务暂时限流，请一分钟后再试"
                if zh
                else ("the weather service is limiting requests right now; try again in a minute")
            )
        case "status":
            return (
                f"天气服务出错（{error.detail}），请稍后再试"
                if zh
                else (f"the weather service failed ({error.detail}); try again later")
            )
        case "rejected":
            return (
                f"天气服务拒绝了请求：{error.detail}"
                if zh
                else f"the weather service refused the request: {error.detail}"
            )
        case _:
            return "天气服务返回了无法解读的数据" if zh else "the weather service sent an answer that could not be read"


def _now(forecast: Forecast, language: Language) -> str:
    now, units = forecast.current, forecast.current_units
    degrees = units.get("temperature_2m", "°C")
    parts = [describe(now.weather_code, language)]
    zh = language == "zh"
    if now.temperature_2m is not None:
        parts.append(f"{_tenths(now.temperature_2m)}{degrees}")
    if now.apparent_temperature is not None:
        feels = f"{_tenths(now.apparent_temperature)}{units.get('apparent_temperature', degrees)}"
        parts.append(f"体感 {feels}" if zh else f"feels like {feels}")
    if now.relative_humidity_2m is not None:
        parts.append(f"{'湿度' if zh else 'humidity'} {now.relative_humidity_2m:.0f}%")
    if now.wind_speed_10m is not None:
        wind = f"{now.wind_speed_10m:.0f} {units.get('wind_speed_10m', 'km/h')}"
        parts.append(f"风速 {wind}" if zh else f"wind {wind}")
    clock = now.time[11:16]
    if zh:
        return f"现在（当地时间 {clock}）：{'，'.join(parts)}"
    return f"Now (local time {clock}): {', '.join(parts)}"


def _day(daily: Daily, i: int, today: dt.date | None, units: dict[str, str], language: Language) -> str:
    zh = language == "zh"
    day = _date(daily.time[i])
    name = daily.time[i] if day is None else _day_name(day, today, language)
    parts = [describe(daily.weather_code[i], language)]
    low, high = daily.temperature_2m_min[i], daily.temperature_2m_max[i]
    if low is not None and high is not None:
        degrees = units.get("temperature_2m_max", "°C")
        low_text, high_text = f"{round(low)}", f"{round(high)}"  # round(): never "-0"
        parts.append(f"{low_text}~{high_text}{degrees}" if zh else f"{low_text} to {high_text}{degrees}")
    rain = daily.precipitation_probability_max[i]
    if rain is not None:
        parts.append(f"降水概率 {rain:.0f}%" if zh else f"{rain:.0f}% chance of precipitation")
    return f"{name}：{'，'.join(parts)}" if zh else f"{name}: {', '.join(parts)}"


def _day_name(day: dt.date, today: dt.date | None, language: Language) -> str:
    relative = RELATIVE[language]
    ahead = (day - today).days if today is not None else -1
    prefix = relative[ahead] if 0 <= ahead < len(relative) else ""
    if language == "zh":
        named = f"{day.month}月{day.day}日 周{WEEKDAYS['zh'][day.weekday()]}"
        return f"{prefix} {named}" if prefix else named
    named = f"{WEEKDAYS['en'][day.weekday()]} {day.day} {MONTHS[day.month - 1]}"
    return f"{prefix}, {named}" if prefix else named


def _ambiguity(located: Located, language: Language) -> str:
    chosen = label(located.place, language)
    others: list[str] = []
    for match in located.matches:
        text = label(match, language)
        if match is not located.place and text != chosen and text not in others:
            others.append(text)
    count = len(located.matches)
    query = located.query.split(",")[0].strip()
    hint_place = next((m for m in located.matches if m is not located.place and (m.admin1 or m.country)), None)
    hint_area = (hint_place.admin1 or hint_place.country) if hint_place is not None else ""
    if language == "zh":
        many = f"至少 {count}" if located.capped else str(count)
        text = f"注：“{query}”匹配到 {many} 个地点，这里是人口最多的一个"
        if others:
            text += f"；其他如 {'、'.join(others[:OTHERS_SHOWN])}"
        return text + (f"。要查别处，请写“{query}, {hint_area}”。" if hint_area else "。")
    many = f"at least {count}" if located.capped else str(count)
    text = f"Note: {many} places match “{query}”; this is the most populous"
    if others:
        text += f". Others: {'; '.join(others[:OTHERS_SHOWN])}"
    return text + (f". For another, write “{query}, {hint_area}”." if hint_area else ".")


def _tenths(value: float) -> str:
    return f"{round(value, 1) + 0.0:.1f}"  # + 0.0: -0.04 reads "0.0", not "-0.0"


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None
