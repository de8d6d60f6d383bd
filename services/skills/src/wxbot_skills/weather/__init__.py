"""The built-in weather skill: `build_weather_skill(WeatherSettings(), http)` → a `wxbot_skill.Skill`."""

from wxbot_skills.weather.settings import WeatherSettings
from wxbot_skills.weather.skill import build_weather_skill

__all__ = ["WeatherSettings", "build_weather_skill"]
