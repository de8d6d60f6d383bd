"""The reports: a few SQL statements over the read model, shaped into stable JSON (docs/analytics.md).

Every statement reads `FINAL` (each event once, see schema.py) and takes its range and limits as
server-side parameters; the only text spliced in is the database name (a checked identifier)
and a bucket expression chosen from a fixed table (query.py). Latencies come from the events'
own times: each stage is the time between the event that ends it and the one that starts it,
within one chain (the correlation id of the MessageReceived).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wxbot_analytics.query import BUCKETS, MAX_BUCKETS, ReportQuery
from wxbot_analytics.settings import Price
from wxbot_analytics.stats import compare, wilson
from wxbot_analytics.store import Row, Store

RANGE = "at >= {since:DateTime64(3, 'UTC')} AND at < {until:DateTime64(3, 'UTC')}"
# Events of a chain may land after `until` (a reply to a message sent just before it): they count.
RANGE_PLUS = (
    "at >= {since:DateTime64(3, 'UTC')} AND at < {until:DateTime64(3, 'UTC')} + toIntervalSecond({window:UInt32})"
)
# Copies of one event share its time, hence its month partition: FINAL need not merge across
# partitions, and a partition already merged into one part is read without merging at all.
FINAL_SETTINGS = "\nSETTINGS do_not_merge_across_partitions_select_final = 1"
ANSWER_SOURCES = "('llm', 'cache', 'knowledge_base')"  # drafted replies that answer a question
STAGES = {
    "inbound_check": ("received", "accepted"),  # safety on the way in
    "answer": ("accepted", "drafted"),  # nlp: history, cache, knowledge base, LLM
    "outbound_check": ("drafted", "checked"),  # safety on the way out
    "delivery": ("checked", "sent"),  # gateway: the provider's send API
    "end_to_end": ("received", "sent"),
}


def _int(value: Any) -> int:
    return int(value or 0)


def _iso(value: str) -> str:
    """ClickHouse's '2026-12-02 13:00:00.000' as ISO 8601 UTC."""
    return value.replace(" ", "T") + ("Z" if not value.endswith("Z") else "")


@dataclass(frozen=True)
class ReportRules:
    prices: dict[str, Price]
    currency: str
    window_s: int
    min_feedback: int
    store_text: bool


class Reports:
    """Runs the report statements against one store (blocking: call through a thread)."""

    def __init__(self, store: Store, rules: ReportRules) -> None:
        self._store = store
        self._rules = rules
        self._events = f"{store.database}.events FINAL"

    def _rows(self, sql: str, q: ReportQuery, **extra: object) -> list[Row]:
        return self._store.rows(sql + FINAL_SETTINGS, {**q.params, "window": self._rules.window_s, **extra})

    # -- sections --------------------------------------------------------------------------
    def summary(self, q: ReportQuery) -> dict[str, Any]:
        (row,) = self._rows(
            f"""SELECT
                countIf(kind = 'received') AS messages,
                countIf(kind = 'sent') AS replies,
                uniqExactIf(user, kind = 'received' AND user != '') AS active_users,
                uniqExactIf(conversation, kind = 'received') AS conversations,
                sumIf(tokens_in, kind = 'drafted') AS tokens_in,
                sumIf(tokens_out, kind = 'drafted') AS tokens_out,
                countIf(kind = 'failed') AS failed_replies,
                countIf(kind IN ('inbound_blocked', 'reply_blocked')) AS blocked,
                countIf(kind = 'feedback') AS explicit_feedback,
                countIf(kind = 'received' AND implicit_negative = 1) AS implicit_negative
            FROM {self._events} WHERE {RANGE}""",
            q,
        )
        return {k: _int(v) for k, v in row.items()}

    def usage(self, q: ReportQuery, bucket: str) -> list[dict[str, Any]]:
        expr = BUCKETS[bucket]  # a fixed fragment chosen by a checked name
        rows = self._rows(
            f"""SELECT {expr} AS bucket, count() AS messages,
                uniqExactIf(user, user != '') AS active_users, uniqExact(conversation) AS conversations
            FROM {self._events} WHERE kind = 'received' AND {RANGE}
            GROUP BY bucket ORDER BY bucket""",
            q,
        )
        return [
            {"bucket": _iso(r["bucket"]), **{k: _int(r[k]) for k in ("messages", "active_users", "conversations")}}
            for r in rows
        ]

    def _chains_sql(self) -> str:
        """One row per chain whose message arrived in range: the time (ms) each stage ended."""
        return f"""SELECT correlation_id,
                toUnixTimestamp64Milli(minIf(at, kind = 'received')) AS received,
                toUnixTimestamp64Milli(minIf(at, kind = 'accepted')) AS accepted,
                toUnixTimestamp64Milli(minIf(at, kind = 'drafted')) AS drafted,
                toUnixTimestamp64Milli(minIf(at, kind IN ('approved', 'reply_blocked'))) AS checked,
                toUnixTimestamp64Milli(minIf(at, kind = 'sent')) AS sent,
                countIf(kind = 'received') AS has_received
            FROM {self._events}
            WHERE kind IN ('received', 'accepted', 'drafted', 'approved', 'reply_blocked', 'sent') AND {RANGE_PLUS}
            GROUP BY correlation_id
            HAVING has_received > 0 AND received < toUnixTimestamp64Milli({{until:DateTime64(3, 'UTC')}})"""

    def latency(self, q: ReportQuery) -> dict[str, Any]:
        parts = []
        for name, (start, end) in STAGES.items():
            ok = f"{start} > 0 AND {end} >= {start}"
            parts.append(
                f"countIf({ok}) AS {name}_n, quantileExactIf(0.5)({end} - {start}, {ok}) AS {name}_p50, "
                f"quantileExactIf(0.95)({end} - {start}, {ok}) AS {name}_p95"
            )
        (row,) = self._rows(f"SELECT {', '.join(parts)} FROM ({self._chains_sql()})", q)
        return {
            name: {
                "count": _int(row[f"{name}_n"]),
                "p50_ms": _int(row[f"{name}_p50"]) if _int(row[f"{name}_n"]) else None,
                "p95_ms": _int(row[f"{name}_p95"]) if _int(row[f"{name}_n"]) else None,
            }
            for name in STAGES
        }

    def _cost(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        price = self._rules.prices.get(model)
        if price is None:
            return None
        return round((tokens_in * price.input + tokens_out * price.output) / 1_000_000, 6)

    def models(self, q: ReportQuery) -> list[dict[str, Any]]:
        rows = self._rows(
            f"""SELECT model, count() AS replies, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
            FROM {self._events} WHERE kind = 'drafted' AND model != '' AND {RANGE}
            GROUP BY model ORDER BY replies DESC, model""",
            q,
        )
        out = []
        for r in rows:
            t_in, t_out = _int(r["tokens_in"]), _int(r["tokens_out"])
            out.append(
                {
                    "model": r["model"],
                    "replies": _int(r["replies"]),
                    "tokens_in": t_in,
                    "tokens_out": t_out,
                    "cost": self._cost(r["model"], t_in, t_out),
                }
            )
        return out

    def sources(self, q: ReportQuery) -> dict[str, Any]:
        rows = self._rows(
            f"""SELECT source, count() AS replies FROM {self._events}
            WHERE kind = 'drafted' AND {RANGE} GROUP BY source ORDER BY source""",
            q,
        )
        counts = {r["source"] or "unspecified": _int(r["replies"]) for r in rows}
        looked_up = counts.get("cache", 0) + counts.get("llm", 0)
        return {
            "replies": counts,
            "cache_hit_rate": round(counts.get("cache", 0) / looked_up, 4) if looked_up else None,
        }

    def safety(self, q: ReportQuery) -> list[dict[str, Any]]:
        rows = self._rows(
            f"""SELECT kind, reason, count() AS blocks FROM {self._events}
            WHERE kind IN ('inbound_blocked', 'reply_blocked') AND {RANGE}
            GROUP BY kind, reason ORDER BY blocks DESC, kind, reason""",
            q,
        )
        return [
            {
                "stage": "inbound" if r["kind"] == "inbound_blocked" else "outbound",
                "reason": r["reason"] or "unspecified",
                "blocks": _int(r["blocks"]),
            }
            for r in rows
        ]

    def questions(self, q: ReportQuery) -> list[dict[str, Any]]:
        if not self._rules.store_text:
            return []
        rows = self._rows(
            f"""SELECT question, count() AS asked FROM {self._events}
            WHERE kind = 'received' AND question != '' AND {RANGE}
            GROUP BY question ORDER BY asked DESC, question LIMIT {{limit:UInt32}}""",
            q,
        )
        return [{"question": r["question"], "asked": _int(r["asked"])} for r in rows]

    # -- A/B ------------------------------------------------------------------------------
    def _answers_sql(self) -> str:
        return f"""SELECT correlation_id, conversation, at, variant
            FROM {self._events} WHERE kind = 'drafted' AND source IN {ANSWER_SOURCES} AND {RANGE}"""

    def variants(self, q: ReportQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per variant, in two passes: one over each answer's chain (tokens, end-to-end latency, the
        latest button pressed on it), one attributing what users did next (a message saying "wrong",
        a reset, any follow-up) to the answer before it in the conversation (ASOF join)."""
        chains = self._rows(
            f"""SELECT variant, count() AS answers,
                sumMap([model], [t_in]) AS tokens_in_by_model, sumMap([model], [t_out]) AS tokens_out_by_model,
                countIf(sent >= received AND received > 0) AS delivered,
                quantileExactIf(0.5)(sent - received, sent >= received AND received > 0) AS p50,
                quantileExactIf(0.95)(sent - received, sent >= received AND received > 0) AS p95,
                countIf(verdict > 0) AS positive, countIf(verdict < 0) AS negative
            FROM (SELECT correlation_id,
                    anyIf(variant, kind = 'drafted') AS variant, anyIf(model, kind = 'drafted') AS model,
                    sumIf(tokens_in, kind = 'drafted') AS t_in, sumIf(tokens_out, kind = 'drafted') AS t_out,
                    toUnixTimestamp64Milli(minIf(at, kind = 'received')) AS received,
                    toUnixTimestamp64Milli(minIf(at, kind = 'sent')) AS sent,
                    argMaxIf(rating, at, kind = 'feedback' AND rating != 0) AS verdict,
                    countIf(kind = 'drafted' AND source IN {ANSWER_SOURCES} AND {RANGE}) AS answered
                FROM {self._events}
                WHERE kind IN ('received', 'drafted', 'sent', 'feedback') AND {RANGE_PLUS}
                GROUP BY correlation_id HAVING answered > 0)
            GROUP BY variant""",
            q,
        )
        after = self._rows(
            f"""SELECT a.variant AS variant,
                countIf(m.kind = 'received' AND m.implicit_negative = 1) AS implicit_negative,
                uniqExactIf(a.correlation_id, m.kind = 'reset') AS resets,
                uniqExactIf(a.correlation_id, m.kind = 'received') AS follow_ups
            FROM (SELECT conversation, at, kind, implicit_negative FROM {self._events}
                  WHERE kind IN ('reset', 'received') AND {RANGE_PLUS}) AS m
            ASOF INNER JOIN ({self._answers_sql()}) AS a ON m.conversation = a.conversation AND m.at > a.at
            WHERE dateDiff('millisecond', a.at, m.at) <= {{window:UInt32}} * 1000
            GROUP BY variant""",
            q,
        )
        aft = {r["variant"] or "unlabelled": r for r in after}
        out: list[dict[str, Any]] = []
        for r in sorted(chains, key=lambda r: str(r["variant"])):
            name = r["variant"] or "unlabelled"
            answers = _int(r["answers"])
            t_in = dict(zip(*r["tokens_in_by_model"], strict=True))
            t_out = dict(zip(*r["tokens_out_by_model"], strict=True))
            costs = [self._cost(m, _int(t_in.get(m)), _int(t_out.get(m))) if m else 0.0 for m in t_in]
            implicit = _int(aft.get(name, {}).get("implicit_negative"))
            pos, neg = _int(r["positive"]), _int(r["negative"]) + implicit
            rated = pos + neg
            ci = wilson(pos, rated)
            delivered = _int(r["delivered"])
            resets = _int(aft.get(name, {}).get("resets"))
            follow_ups = _int(aft.get(name, {}).get("follow_ups"))
            out.append(
                {
                    "name": name,
                    "answers": answers,
                    "tokens_in": sum(_int(v) for v in t_in.values()),
                    "tokens_out": sum(_int(v) for v in t_out.values()),
                    "cost": None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 6),
                    "latency_p50_ms": _int(r["p50"]) if delivered else None,
                    "latency_p95_ms": _int(r["p95"]) if delivered else None,
                    "feedback_positive": pos,
                    "feedback_negative": neg,
                    "feedback_explicit": _int(r["positive"]) + _int(r["negative"]),
                    "feedback_implicit": implicit,
                    "feedback_rate": round(rated / answers, 4) if answers else None,
                    "positive_share": round(pos / rated, 4) if rated else None,
                    "positive_share_ci95": [round(x, 4) for x in ci] if ci else None,
                    "resets": resets,
                    "reset_rate": round(resets / answers, 4) if answers else None,
                    "follow_ups": follow_ups,
                    "follow_up_rate": round(follow_ups / answers, 4) if answers else None,
                }
            )
        comparisons = []
        for i, a in enumerate(out):
            for b in out[i + 1 :]:
                n_a = a["feedback_positive"] + a["feedback_negative"]
                n_b = b["feedback_positive"] + b["feedback_negative"]
                c = compare(
                    a["name"],
                    a["feedback_positive"],
                    n_a,
                    b["name"],
                    b["feedback_positive"],
                    n_b,
                    self._rules.min_feedback,
                )
                comparisons.append(c.to_json())
        return out, comparisons

    # -- everything ------------------------------------------------------------------------
    def full(self, q: ReportQuery) -> dict[str, Any]:
        summary = self.summary(q)
        variants, comparisons = self.variants(q)
        hourly = (q.until - q.since).total_seconds() <= MAX_BUCKETS * 3600
        models = self.models(q)
        return {
            "range": q.to_json(),
            **{k: summary[k] for k in ("messages", "replies", "active_users", "conversations")},
            "tokens_in": summary["tokens_in"],
            "tokens_out": summary["tokens_out"],
            "cost": self._total_cost(models),
            "currency": self._rules.currency,
            "failed_replies": summary["failed_replies"],
            "usage": {"hour": self.usage(q, "hour") if hourly else None, "day": self.usage(q, "day")},
            "latency_ms": self.latency(q),
            "models": models,
            "sources": self.sources(q),
            "safety_blocks": self.safety(q),
            "feedback": {
                "explicit": summary["explicit_feedback"],
                "implicit_negative": summary["implicit_negative"],
            },
            "questions": self.questions(q) if self._rules.store_text else None,
            "variants": variants,
            "comparisons": comparisons,
            "verdict": comparisons[0]["verdict"] if comparisons else "only one variant: nothing to compare",
        }

    @staticmethod
    def _total_cost(models: list[dict[str, Any]]) -> float | None:
        costs: list[float | None] = [m["cost"] for m in models]
        known = [c for c in costs if c is not None]
        return round(sum(known), 6) if len(known) == len(costs) else None
