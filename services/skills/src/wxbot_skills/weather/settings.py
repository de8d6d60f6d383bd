"""Settings of the weather skill (environment variables `WEATHER_*`, then `.env`).

The defaults are the public Open-Meteo service, free for non-commercial use only (under 10,000
calls a day); a commercial deployment points both URLs at `https://customer-…open-meteo.com`
and sets `WEATHER_API_KEY`, or at a self-hosted Open-Meteo.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WeatherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEATHER_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    geocoding_url: str = Field(
        "https://geocoding-api.open-meteo.com", description="base URL of an Open-Meteo geocoding API (/v1/search)"
    )
    forecast_url: str = Field(
        "https://api.open-meteo.com", description="base URL of an Open-Meteo forecast API (/v1/forecast)"
    )
    api_key: str = Field("", description="sent as `apikey` to both (Open-Meteo's commercial servers need one)")
    timeout_s: float = Field(
        5.0, gt=0, le=60, description="the whole lookup (place, then forecast); within nlp's SKILLS_CALL_TIMEOUT_S"
    )
    geocoding_count: int = Field(
        20, ge=1, le=100, description="matches asked for; the most populous is chosen (the API ranks otherwise)"
    )
    max_connections: int = Field(16, ge=1, description="HTTP connections to the weather APIs per process")
    attribution: str = Field(
        "Open-Meteo.com", description="named under every report (Open-Meteo's CC BY 4.0 asks for it); empty = none"
    )
