"""Composition root of the skills service: the built-in skills, each a NATS micro service of its own
(`wxbot_skill.Skill`), mounted on one connection; plus what reminders need beyond their tools.

A built-in skill is one entry of `skills` below; nlp discovers it like any third party's.
"""

from __future__ import annotations

from datetime import timedelta

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.runtime import ServiceRuntime
from wxbot_skill import Skill
from wxbot_skills.reminders.book import ReminderBook
from wxbot_skills.reminders.firing import DueReminders
from wxbot_skills.reminders.metrics import ReminderMetrics
from wxbot_skills.reminders.tools import RemindersTools, limits_of, reminders_skill
from wxbot_skills.settings import SkillsSettings
from wxbot_skills.weather import WeatherSettings, build_weather_skill


async def main() -> None:
    settings = SkillsSettings()
    runtime = ServiceRuntime("skills", settings)
    await runtime.start()

    book = ReminderBook(runtime.js, settings.stream_replicas, timedelta(seconds=settings.reminders_keep_fired_s))
    await book.ensure()
    metrics = ReminderMetrics(runtime.registry)
    reminders = RemindersTools(
        book,
        settings.reminders_time_zone,
        limits_of(settings.reminders_max_ahead_days, settings.reminders_min_interval_s),
        settings.reminders_max_per_user,
        metrics,
    )
    weather = WeatherSettings()
    http = TracedHttp(create_session(weather.max_connections, weather.timeout_s))
    runtime.on_shutdown(http.close)  # after the skills have drained (shutdown hooks run last first)
    skills: list[Skill] = [
        reminders_skill(reminders, settings.reminders_time_zone),
        build_weather_skill(weather, http),
    ]
    services = [await skill.start(runtime.nc) for skill in skills]
    runtime.log.info("skills_ready", skills=[s.name for s in skills])

    async def stop_skills() -> None:
        for service in services:
            await service.stop()
        for skill in skills:
            await skill.drain(settings.shutdown_grace_s)

    runtime.on_shutdown(stop_skills)
    due = DueReminders(runtime.js, runtime.publisher, runtime.tracer, metrics, settings.reminders_concurrency)
    runtime.background(due.run(), "reminders-due")
    await runtime.serve_http(None, settings.skills_http_port)
    await runtime.run_until_stopped()
