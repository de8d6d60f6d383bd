"""The embedded store shared by the projection (inserts) and the report API (queries) on two threads."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wxbot_analytics.rows import RowRules, to_row
from wxbot_analytics.schema import COLUMNS, TABLE, ensure_schema
from wxbot_analytics.store import EmbeddedStore
from wxbot_analytics.synthetic import Chain, chain_events


@pytest.mark.timeout(120)
def test_queries_while_inserts_stream_on_another_thread_all_succeed(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, "wxbot")
    ensure_schema(store, 30)
    rules = RowRules.of("k", False, [])
    batches = [
        [
            to_row(kind, event, b * 1000 + i, rules)
            for i, (kind, event) in enumerate(chain_events(Chain(b, f"u{b}", time.time())))
        ]
        for b in range(150)
    ]

    def insert_all() -> None:
        for rows in batches:
            store.insert(TABLE, COLUMNS, rows)

    def query_while_inserting() -> int:
        n = 0
        while not inserter.done():
            store.rows(f"SELECT count() AS n FROM wxbot.{TABLE}")
            n += 1
        return n

    try:
        with ThreadPoolExecutor(2) as pool:
            inserter = pool.submit(insert_all)
            querier = pool.submit(query_while_inserting)
            inserter.result(timeout=100)
            assert querier.result(timeout=100) > 0
        (total,) = store.rows(f"SELECT count() AS n FROM wxbot.{TABLE}")
        assert int(total["n"]) == sum(len(b) for b in batches)
    finally:
        store.close()
