"""WMO weather interpretation codes (Open-Meteo's `weather_code`) in words, Chinese and English."""

from __future__ import annotations

from typing import Literal

Language = Literal["zh", "en"]

# Open-Meteo documents these codes (its WMO code table); other values are not expected.
WMO_CODES: dict[int, tuple[str, str]] = {
    0: ("晴", "clear sky"),
    1: ("大部晴朗", "mainly clear"),
    2: ("多云", "partly cloudy"),
    3: ("阴", "overcast"),
    45: ("雾", "fog"),
    48: ("雾凇", "depositing rime fog"),
    51: ("小毛毛雨", "light drizzle"),
    53: ("毛毛雨", "moderate drizzle"),
    55: ("大毛毛雨", "dense drizzle"),
    56: ("小冻毛毛雨", "light freezing drizzle"),
    57: ("冻毛毛雨", "dense freezing drizzle"),
    61: ("小雨", "slight rain"),
    63: ("中雨", "moderate rain"),
    65: ("大雨", "heavy rain"),
    66: ("小冻雨", "light freezing rain"),
    67: ("冻雨", "heavy freezing rain"),
    71: ("小雪", "slight snow"),
    73: ("中雪", "moderate snow"),
    75: ("大雪", "heavy snow"),
    77: ("米雪", "snow grains"),
    80: ("小阵雨", "slight rain showers"),
    81: ("阵雨", "moderate rain showers"),
    82: ("强阵雨", "violent rain showers"),
    85: ("小阵雪", "slight snow showers"),
    86: ("强阵雪", "heavy snow showers"),
    95: ("雷阵雨", "thunderstorm"),
    96: ("雷阵雨伴有小冰雹", "thunderstorm with slight hail"),
    99: ("雷阵雨伴有大冰雹", "thunderstorm with heavy hail"),
}


def describe(code: int | None, language: Language) -> str:
    """The words for a code; a code outside the table is named, never dropped or guessed."""
    if code is None:
        return "天气不详" if language == "zh" else "conditions unknown"
    words = WMO_CODES.get(code)
    if words is None:
        return f"天气代码 {code}" if language == "zh" else f"weather code {code}"
    return words[0] if language == "zh" else words[1]
