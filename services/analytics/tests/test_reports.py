"""The reports over a real embedded ClickHouse (chDB), fed rows built from real protobuf events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wxbot_analytics.query import BadQueryError, parse_query
from wxbot_analytics.reports import ReportRules, Reports
from wxbot_analytics.rows import RowRules, to_row
from wxbot_analytics.schema import COLUMNS, TABLE, ensure_schema
from wxbot_analytics.settings import Price
from wxbot_analytics.store import EmbeddedStore, Row
from wxbot_analytics.synthetic import Chain, chain_events
from wxbot_common.nats.subjects import EventKind
from wxbot_proto.events.v1 import events_pb2 as ev

RULES = RowRules.of("test-key", True, ["不对", "wrong"])
NOW = time.time()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(Path(tmp_path_factory.mktemp("chdb")), "wxbot")
    ensure_schema(s, 30)
    yield s
    s.close()


def rows_of(chains: list[Chain]) -> list[Row]:
    out: list[Row] = []
    seq = 0
    for c in chains:
        for kind, event in chain_events(c):
            seq += 1
            out.append(to_row(kind, event, seq, RULES))
    return out


def reports(store: EmbeddedStore, min_feedback: int = 5) -> Reports:
    return Reports(store, ReportRules({"fake-model": Price(1.0, 2.0)}, "USD", 300, min_feedback, True))


def test_counts_tokens_latency_and_variants_match_what_happened(store: EmbeddedStore) -> None:
    chains = [
        Chain(
            i,
            f"user{i % 4}",
            NOW - 3600 + i * 10,
            variant="A" if i % 2 else "B",
            tokens_in=100 + i,
            tokens_out=10,
            answer_s=0.2 if i % 2 else 0.4,
            feedback=1 if i % 2 else (-1 if i % 4 == 0 else 1),
        )
        for i in range(20)
    ]
    rows = rows_of(chains)
    store.insert(TABLE, list(COLUMNS), rows)
    store.insert(TABLE, list(COLUMNS), rows[:30])  # a redelivery of part of the log: counted once
    r = reports(store).full(parse_query({"since": "2h"}, 400))
    assert r["messages"] == 20 and r["replies"] == 20
    assert r["tokens_in"] == sum(100 + i for i in range(20)) and r["tokens_out"] == 200
    assert r["active_users"] == 4
    assert r["latency_ms"]["answer"]["count"] == 20
    assert r["latency_ms"]["answer"]["p50_ms"] in (200, 400)
    assert r["latency_ms"]["end_to_end"]["p95_ms"] == 430
    a, b = r["variants"]
    assert (a["name"], a["answers"], a["feedback_positive"], a["feedback_negative"]) == ("A", 10, 10, 0)
    assert (b["name"], b["answers"], b["feedback_positive"], b["feedback_negative"]) == ("B", 10, 5, 5)
    assert a["latency_p50_ms"] == 230 and b["latency_p50_ms"] == 430
    assert a["positive_share_ci95"][0] > 0.6
    assert r["comparisons"][0]["verdict"].startswith("A is better on positive feedback, p = ")
    assert r["models"][0]["cost"] == pytest.approx((sum(100 + i for i in range(20)) * 1 + 200 * 2) / 1e6)
    assert r["questions"] == [{"question": "hello", "asked": 20}]


def test_implicit_negative_attributed_to_the_answer_before(store: EmbeddedStore) -> None:
    base = NOW - 7200 - 600
    first = Chain(1000, "implicit-user", base, variant="C")
    wrong = Chain(1001, "implicit-user", base + 20, variant="C", text="不对！")
    store.insert(TABLE, list(COLUMNS), rows_of([first, wrong]))
    q = parse_query({"since": "3h", "until": "2h"}, 400)
    (c,) = reports(store).variants(q)[0]
    assert c["name"] == "C" and c["feedback_negative"] == 1 and c["feedback_implicit"] == 1
    assert c["follow_ups"] == 1


@pytest.mark.parametrize(
    "args",
    [
        {"since": "1'; DROP TABLE events; --"},
        {"since": "7d", "group_by": "user"},
        {"since": "99999999d"},
        {"since": "7d", "until": "8d"},
        {"since": "5000d"},
        {"bucket": "minute"},
        {"limit": "0"},
        {"limit": "1 OR 1=1"},
        {"since": "90d", "bucket": "hour"},
    ],
)
def test_bad_queries_are_refused(args: dict[str, str]) -> None:
    with pytest.raises(BadQueryError):
        parse_query(args, 400, now=datetime.now(UTC))


def test_rows_hash_users_and_keep_text_only_when_asked() -> None:
    (kind, received), *_ = chain_events(Chain(1, "zhangsan", NOW, text="Hello, World！"))
    plain = to_row(kind, received, 1, RowRules.of("k", False, []))
    assert "zhangsan" not in str(plain) and plain["text"] == "" and plain["question"] == ""
    kept = to_row(kind, received, 1, RowRules.of("k", True, []))
    assert kept["question"] == "hello world" and kept["user"] == plain["user"]
    assert to_row(kind, received, 1, RowRules.of("other", False, []))["user"] != plain["user"]
    assert to_row(EventKind.RECEIVED, ev.MessageReceived(), 1, RULES)["user"] == ""


DASHBOARD = Path(__file__).parents[3] / "deploy/helm/wxbot/files/grafana-analytics-dashboard.json"


def test_every_grafana_panel_query_runs_against_the_read_model(store: EmbeddedStore) -> None:
    """The dashboard's SQL, with the plugin's macros expanded as it does, runs on the real schema."""
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["templating"]["list"][0]["query"] == "grafana-clickhouse-datasource"
    for panel in dashboard["panels"]:
        sql = panel["targets"][0]["rawSql"]
        sql = sql.replace("$__timeFilter(at)", "at >= now() - INTERVAL 7 DAY AND at <= now()")
        sql = sql.replace("$__timeInterval(at)", "toStartOfInterval(at, INTERVAL 60 second)")
        assert "$__" not in sql, panel["title"]
        assert isinstance(store.rows(sql), list), panel["title"]
