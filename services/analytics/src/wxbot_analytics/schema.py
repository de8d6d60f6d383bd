"""The read model: one wide table of events, one row per event id.

Every event of the log becomes one row (columns a kind does not use stay empty). The table is a
ReplacingMergeTree keyed by (kind, event_id): a replay, a redelivery or a rebuild that overlaps
the live projection inserts rows that share their key and collapse into one; queries read
`FINAL`, so they count each event once even before the background merge. Rows expire with a
TTL on the event's own time (`ANALYTICS_RETENTION_DAYS`), so a rebuild keeps what live
operation keeps.
"""

from __future__ import annotations

from wxbot_analytics.store import Store

TABLE = "events"

COLUMNS: dict[str, str] = {
    "event_id": "String",
    "kind": "LowCardinality(String)",
    "seq": "UInt64",
    "at": "DateTime64(3, 'UTC')",
    "conversation": "String",  # keyed hash, never the conversation id
    "user": "String",  # keyed hash of channel:corp:user ("" when the event names no user)
    "correlation_id": "String",
    "causation_id": "String",
    "channel": "LowCardinality(String)",
    "msg_kind": "LowCardinality(String)",
    "source": "LowCardinality(String)",
    "model": "LowCardinality(String)",
    "variant": "LowCardinality(String)",
    "tokens_in": "UInt32",
    "tokens_out": "UInt32",
    "reason": "LowCardinality(String)",
    "rating": "Int8",  # +1 / -1 on feedback rows
    "feedback_kind": "LowCardinality(String)",
    "task_id": "String",
    "implicit_negative": "UInt8",  # a message that says the answer before it was wrong
    "errcode": "Int64",
    "text": "String",  # only with ANALYTICS_STORE_TEXT=true
    "question": "String",  # normalised text, likewise
}


def create_table_sql(database: str, retention_days: int) -> str:
    columns = ",\n  ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{TABLE} (\n  {columns}\n)\n"
        "ENGINE = ReplacingMergeTree\n"
        "PARTITION BY toYYYYMM(at)\n"
        "ORDER BY (kind, event_id)\n"
        f"TTL toDateTime(at) + toIntervalDay({int(retention_days)})"
    )


def ensure_schema(store: Store, retention_days: int) -> None:
    """Create the table, or bring its TTL to the configured retention."""
    store.command(create_table_sql(store.database, retention_days))
    found = store.rows(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": TABLE},
    )
    ttl = f"toIntervalDay({int(retention_days)})"
    if found and ttl not in str(found[0].get("engine_full", "")):
        store.command(f"ALTER TABLE {store.database}.{TABLE} MODIFY TTL toDateTime(at) + {ttl}")


def wipe(store: Store) -> None:
    """Empty the read model (before a rebuild)."""
    store.command(f"TRUNCATE TABLE IF EXISTS {store.database}.{TABLE}")
