"""What the service, the rebuild and the CLI build alike from the settings."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from wxbot_analytics.reports import ReportRules
from wxbot_analytics.rows import RowRules
from wxbot_analytics.settings import AnalyticsSettings
from wxbot_analytics.store import Store, open_store

KEY_FILE = "hash.key"


def data_dir(settings: AnalyticsSettings) -> Path:
    return Path(settings.analytics_data_dir).resolve()


def hash_key(settings: AnalyticsSettings) -> str:
    """ANALYTICS_HASH_KEY; for the embedded store, else a random key kept (owner-only) beside its data,
    so hashes stay stable across restarts and rebuilds of one installation."""
    if settings.analytics_hash_key:
        return settings.analytics_hash_key
    if settings.analytics_clickhouse_url:
        raise ValueError("ANALYTICS_HASH_KEY is required with ANALYTICS_CLICKHOUSE_URL (keep it in a Secret)")
    path = data_dir(settings) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def row_rules(settings: AnalyticsSettings) -> RowRules:
    return RowRules.of(hash_key(settings), settings.analytics_store_text, settings.negative_phrases)


def report_rules(settings: AnalyticsSettings) -> ReportRules:
    return ReportRules(
        prices=settings.prices,
        currency=settings.analytics_currency,
        window_s=settings.analytics_feedback_window_s,
        min_feedback=settings.analytics_min_feedback,
        store_text=settings.analytics_store_text,
    )


def open_configured_store(settings: AnalyticsSettings) -> Store:
    return open_store(settings.analytics_clickhouse_url, data_dir(settings) / "chdb", settings.analytics_database)
