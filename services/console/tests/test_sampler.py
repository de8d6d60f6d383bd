"""The dashboard's series out of Prometheus expositions: which samples count, rates between two
samples, a restarted process's counters, stage latency means."""

from __future__ import annotations

from wxbot_console.sampler import MetricsSampler, Point, totals_of

EXPOSITION = """\
# TYPE wxbot_gateway_callbacks_total counter
wxbot_gateway_callbacks_total{channel="wecom",outcome="accepted"} 10.0
wxbot_gateway_callbacks_total{channel="wecom",outcome="bad_signature"} 3.0
# TYPE wxbot_consumer_handle_seconds histogram
wxbot_consumer_handle_seconds_sum{durable="nlp-drafter",kind="accepted"} 2.0
wxbot_consumer_handle_seconds_count{durable="nlp-drafter",kind="accepted"} 4.0
# TYPE wxbot_safety_decisions_total counter
wxbot_safety_decisions_total{stage="inbound",verdict="accepted",reason="ok"} 9.0
wxbot_safety_decisions_total{stage="inbound",verdict="blocked",reason="sensitive_word"} 1.0
# TYPE wxbot_consumer_pending gauge
wxbot_consumer_pending{durable="nlp-drafter"} 7.0
"""


def test_only_the_dashboards_samples_are_kept() -> None:
    totals = totals_of(EXPOSITION)
    assert totals.counters == {
        "traffic.messages": 10.0,
        "stage.nlp-drafter.sum": 2.0,
        "stage.nlp-drafter.count": 4.0,
        "safety.inbound.sensitive_word": 1.0,
    }
    assert totals.gauges == {"lag.nlp-drafter": 7.0}


def test_rates_means_and_a_restarted_counter() -> None:
    sampler = MetricsSampler({}, http=None, every_s=1.0)  # type: ignore[arg-type]
    sampler.points.extend(
        [
            Point(100.0, {"traffic.messages": 10.0, "stage.x.sum": 1.0, "stage.x.count": 2.0}, {"lag.x": 1.0}),
            Point(102.0, {"traffic.messages": 14.0, "stage.x.sum": 1.5, "stage.x.count": 4.0}, {"lag.x": 3.0}),
            Point(104.0, {"traffic.messages": 2.0, "stage.x.sum": 1.5, "stage.x.count": 4.0}, {}),
        ]
    )
    series = sampler.series()
    assert series["time"] == [102.0, 104.0]
    assert series["rates"] == {"traffic.messages": [2.0, 1.0]}  # the restart: 2 new messages in 2 s
    assert series["stage_ms"] == {"stage.x": [250.0, None]}  # nothing handled in the second interval
    assert series["lag"] == {"lag.x": [3.0, None]}
    assert series["totals"] == {"traffic.messages": 2.0}
