"""`python -m wxbot_analytics report --since 7d [--until …] [--json]`: a report on the terminal.

It asks the running service's API (ANALYTICS_URL, else ANALYTICS_HOST:ANALYTICS_PORT); when
nothing answers there it opens the store itself (the embedded one only while the service is
stopped). `--json` prints the API's JSON object unchanged, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from wxbot_analytics.query import BadQueryError, parse_query
from wxbot_analytics.reports import Reports
from wxbot_analytics.settings import AnalyticsSettings
from wxbot_analytics.store import StoreError
from wxbot_analytics.wiring import open_configured_store, report_rules


def fetch_report(url: str, args: dict[str, str]) -> dict[str, Any] | None:
    """The report from the service, None when no service answers; BadQueryError on its 400."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/v1/report", params=args, timeout=60)
    except httpx.TransportError:
        return None
    if resp.status_code == 400:
        raise BadQueryError(resp.json().get("error", resp.text))
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def direct_report(settings: AnalyticsSettings, args: dict[str, str]) -> dict[str, Any]:
    query = parse_query(args, settings.analytics_max_range_days)
    store = open_configured_store(settings)
    try:
        return Reports(store, report_rules(settings)).full(query)
    finally:
        store.close()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def render(r: dict[str, Any]) -> str:
    """The report for a person."""
    lines = [
        f"wxbot analytics {r['range']['since']} → {r['range']['until']}",
        f"  messages {r['messages']}   replies {r['replies']}   active users {r['active_users']}   "
        f"conversations {r['conversations']}   failed replies {r['failed_replies']}",
        f"  tokens in {r['tokens_in']}   out {r['tokens_out']}   cost "
        + ("-" if r["cost"] is None else f"{r['cost']:.4f} {r['currency']}"),
        "  latency (ms)      count     p50     p95",
    ]
    for stage, s in r["latency_ms"].items():
        lines.append(f"    {stage:<15}{s['count']:>7}{s['p50_ms'] or '-':>8}{s['p95_ms'] or '-':>8}")
    sources = ", ".join(f"{k} {v}" for k, v in r["sources"]["replies"].items()) or "-"
    lines.append(f"  sources: {sources}   cache hit rate {_pct(r['sources']['cache_hit_rate'])}")
    if r["safety_blocks"]:
        lines.append(
            "  safety blocks: " + ", ".join(f"{b['stage']}/{b['reason']} {b['blocks']}" for b in r["safety_blocks"])
        )
    lines.append("  variant          answers  p50 ms  tokens in/out   +    -   positive (95 % CI)     resets")
    for v in r["variants"]:
        ci = v["positive_share_ci95"]
        share = "-" if v["positive_share"] is None else f"{_pct(v['positive_share'])} ({_pct(ci[0])}-{_pct(ci[1])})"
        lines.append(
            f"    {v['name']:<15}{v['answers']:>7}{v['latency_p50_ms'] or '-':>8}  "
            f"{v['tokens_in']:>6}/{v['tokens_out']:<7}"
            f"{v['feedback_positive']:>4}{v['feedback_negative']:>5}   {share:<22}{_pct(v['reset_rate'])}"
        )
    lines.append(f"  verdict: {r['verdict']}")
    if r.get("questions"):
        lines.append("  most asked: " + "; ".join(f"{q['question']} ({q['asked']})" for q in r["questions"][:10]))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m wxbot_analytics report", description=__doc__)
    parser.add_argument("--since", default="7d", help="7d, 24h, 30m or an ISO 8601 time (default 7d)")
    parser.add_argument("--until", default="", help="end of the range (default now)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--url", default="", help="the analytics API (default ANALYTICS_URL or host:port)")
    args = parser.parse_args(argv)
    settings = AnalyticsSettings()
    params = {"since": args.since, **({"until": args.until} if args.until else {})}
    url = (
        args.url
        or settings.analytics_url
        or f"http://{settings.bind_host.replace('0.0.0.0', '127.0.0.1')}:{settings.analytics_port}"
    )
    try:
        report = fetch_report(url, params)
        if report is None:
            report = direct_report(settings, params)
    except BadQueryError as exc:
        print(f"report: {exc}", file=sys.stderr)
        sys.exit(2)
    except (StoreError, ValueError, httpx.HTTPError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report, ensure_ascii=False) if args.json else render(report))
