"""The pure parts of the benchmark: /proc parsing, percentiles, overhead, order, py-spy summaries, presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from bench import repeat
from bench.host_speed import parse_probe_line, reference_loop_ms, slice_ms
from bench.load import BENCH_ROOT, parse_args, probe_slices
from bench.procstat import (
    CLK_TCK,
    Meter,
    ProcFigures,
    ProcSample,
    Tracked,
    figures,
    parse_proc_stat,
    parse_stat_ticks,
    parse_status_kb,
    sample_pid,
)
from bench.profiler import short_path, summarize
from bench.report import Results, ceiling
from bench.scenarios import MAKE_BENCH, SCENARIOS
from bench.stats import Round, Sent, check_order, overhead_s, percentile, rounds, summary_ms


def stat_line(comm: str, utime: int, stime: int) -> str:
    # fields 3..52 after "pid (comm)": state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt,
    # cmajflt, utime (14), stime (15), cutime, cstime, ...
    rest = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", str(utime), str(stime), "77", "88"]
    rest += ["20", "0", "1", "0", "12345", "1000000", "250"] + ["0"] * 30
    return f"4242 ({comm}) " + " ".join(rest) + "\n"


def test_stat_cpu_ticks_is_utime_plus_stime() -> None:
    assert sum(parse_stat_ticks(stat_line("python", 150, 30))) == 180


def test_stat_keeps_the_kernels_part_apart() -> None:
    assert parse_stat_ticks(stat_line("python", 150, 30)) == (150, 30)


def test_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    assert sum(parse_stat_ticks(stat_line("we ird) (name", 7, 5))) == 12


def test_status_kb() -> None:
    status = "Name:\tpython\nVmHWM:\t  120000 kB\nVmRSS:\t   98304 kB\nThreads:\t4\n"
    assert parse_status_kb(status, "VmRSS") == 98304
    assert parse_status_kb(status, "VmHWM") == 120000
    assert parse_status_kb("Name:\tzombie\n", "VmRSS") is None


def test_whole_box_from_proc_stat() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    box = parse_proc_stat("cpu  100 0 50 800 10 5 15 20 30 0\ncpu0 1 2 3\n")
    assert box.busy_s * CLK_TCK == pytest.approx(170)
    assert box.steal_s * CLK_TCK == pytest.approx(20)
    assert box.total_s * CLK_TCK == pytest.approx(1000)


def test_sample_of_this_process_and_of_a_missing_one() -> None:
    me = sample_pid(os.getpid())
    assert me is not None and me.cpu_s > 0 and (me.rss_kb or 0) > 0 and (me.fds or 0) > 0
    assert me.system_s is not None and 0 <= me.system_s <= me.cpu_s
    assert sample_pid(0) is None  # /proc/0 never exists
    assert CLK_TCK > 0


def test_figures_are_deltas_per_reply() -> None:
    t = Tracked("gateway-1", "service", 4242)
    t.idle = ProcSample(cpu_s=1.0, rss_kb=10240, hwm_kb=10240, fds=20)
    t.before = ProcSample(cpu_s=1.01, rss_kb=10240, hwm_kb=10240, fds=20, system_s=0.5)
    t.after = ProcSample(cpu_s=3.01, rss_kb=20480, hwm_kb=30720, fds=35, system_s=1.0)
    f = figures(t, replies=400, idle_s=1.0)
    assert f.kernel_share == pytest.approx(0.25)  # 0.5 s of the 2 s in the kernel
    assert f.cpu_ms == pytest.approx(2000)
    assert f.cpu_ms_per_reply == pytest.approx(5.0)
    assert f.idle_cpu_ms_per_s == pytest.approx(10.0)
    assert (f.rss_mb_before, f.rss_mb_after, f.rss_mb_peak) == (10.0, 20.0, 30.0)
    assert (f.fds_before, f.fds_after) == (20, 35)
    gone = figures(Tracked("nlp-1", "service", 1, before=t.before), replies=400, idle_s=0)
    assert gone.cpu_ms is None and gone.cpu_ms_per_reply is None and gone.idle_cpu_ms_per_s is None


def test_percentiles_interpolate() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([3.0], 0.95) == 3.0
    s = summary_ms([0.1, 0.2, 0.3])
    assert s == {"p50": 200.0, "p95": 290.0, "p99": 298.0, "max": 300.0, "count": 3}
    assert summary_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}


def test_overhead_subtracts_the_llm_latency() -> None:
    assert overhead_s([1.25, 1.5], 1.0) == [0.25, 0.5]


def one_by_one(user: str, count: int) -> dict[tuple[str, int], Sent]:
    """Messages sent a second apart, each acked 0.1 s after it was sent."""
    return {(user, i): Sent(float(i), i + 0.1) for i in range(count)}


def test_order_in_order_and_gaps_are_fine() -> None:
    assert check_order({"a": [0, 1, 2, 3]}, one_by_one("a", 4)).violations == 0
    assert check_order({"a": [0, 2, 3]}, one_by_one("a", 4)).violations == 0  # #1 lost: a gap


def test_order_violations_are_counted_per_late_reply() -> None:
    sent = {**one_by_one("a", 4), **one_by_one("b", 4), **one_by_one("c", 3)}
    check = check_order({"a": [1, 0, 2], "b": [3, 0, 1, 2], "c": [2, 1, 0]}, sent, limit=2)
    assert (check.violations, check.overlapping) == (6, 0)
    assert check.examples == ["a: #0 after #1", "b: #0 after #3"]


def test_order_of_overlapping_callbacks_is_not_a_violation() -> None:
    # #1 was sent before #0's callback was acked (both in flight): the gateway may have seen #1 first.
    sent = {("a", 0): Sent(0.0, 0.5), ("a", 1): Sent(0.2, 0.6), ("a", 2): Sent(1.0, 1.1)}
    check = check_order({"a": [1, 0, 2]}, sent)
    assert (check.violations, check.overlapping, check.examples) == (0, 1, [])
    never_acked = {("a", 0): Sent(0.0), ("a", 1): Sent(5.0, 5.1)}
    assert check_order({"a": [1, 0]}, never_acked).overlapping == 1


def speedscope() -> dict[str, Any]:
    frames = [
        {"name": "run", "file": "/x/.venv/lib/python3.11/site-packages/uvloop/__init__.py", "line": 1},
        {"name": "handle", "file": "/x/services/gateway/src/wxbot_gateway/app.py", "line": 10},
        {"name": "handle", "file": "/x/services/gateway/src/wxbot_gateway/app.py", "line": 12},
        {"name": "decrypt", "file": "/x/libs/wxbot-wecom/src/wxbot_wecom/crypto.py", "line": 5},
    ]
    return {
        "shared": {"frames": frames},
        "profiles": [
            {"type": "sampled", "samples": [[0, 1, 3], [0, 2, 3], [0, 2], [0]], "weights": [0.005] * 4},
            {"type": "sampled", "samples": [[0, 1, 3], []], "weights": [0.005, 0.005]},
        ],
    }


def test_speedscope_summary_ranks_own_samples_and_merges_lines() -> None:
    summary = summarize(speedscope(), "gateway-1", "p/gateway-1.json", top=2)
    assert summary.samples == 5
    assert summary.sampled_s == pytest.approx(0.025)
    first, second = summary.top
    assert first.function == "decrypt (wxbot_wecom/crypto.py)"
    assert first.own_share == pytest.approx(0.6) and first.total_share == pytest.approx(0.6)
    assert second.function == "handle (wxbot_gateway/app.py)"  # lines 10 and 12: one function
    assert second.own_share == pytest.approx(0.2) and second.total_share == pytest.approx(0.8)


def test_short_path() -> None:
    assert short_path("/usr/lib/python3.11/asyncio/events.py") == "asyncio/events.py"
    assert short_path("/x/.venv/lib/python3.11/site-packages/aiohttp/client.py") == "aiohttp/client.py"
    assert short_path("<frozen abc>") == "<frozen abc>"


def test_scenarios_preset_defaults_and_explicit_knobs_win() -> None:
    assert set(MAKE_BENCH) <= set(SCENARIOS)
    burst = parse_args(["--scenario", "burst"])
    assert (burst.users, burst.messages, burst.llm_latency, burst.otlp, burst.rate) == (200, 3, 1.0, True, None)
    fast = parse_args(["--scenario", "fast", "--users", "5", "--no-otlp"])
    assert (fast.users, fast.messages, fast.sampler_ratio, fast.otlp) == (5, 20, 0.1, False)
    steady = parse_args(["--scenario", "steady"])
    assert (steady.rate, steady.duration, steady.users, steady.llm_latency) == (50.0, 20.0, 200, 0.2)
    plain = parse_args([])
    assert plain.scenario is None and plain.rate is None and plain.otlp is False and plain.warmup == 2


def test_rounds_group_a_closed_loop_by_message_index_and_show_each_rounds_last_reply() -> None:
    owner = {"a0": ("a", 0), "a1": ("a", 1), "b0": ("b", 0), "b1": ("b", 1), "c0": ("c", 0)}
    sent = {"a0": 10.0, "a1": 11.5, "b0": 10.0, "b1": 12.0, "c0": 10.1}
    arrived = {"a0": 11.4, "b0": 11.9, "a1": 12.6, "b1": 13.2}  # c0 never answered: left out
    first, second = rounds(owner, sent, arrived, load_started=10.0)
    assert (first.index, first.messages, second.index, second.messages) == (0, 2, 1, 2)
    assert first.last_reply_s == pytest.approx(1.9) and second.last_reply_s == pytest.approx(3.2)
    assert first.e2e_max_s == pytest.approx(1.9) and first.e2e_p50_s == pytest.approx(1.65)
    assert second.e2e_p50_s == pytest.approx(1.15)
    results = Results("custom", "closed", "closed", 2, 4, 1.0, 0.1, rounds=[first, second])
    assert "#1 done 1.90 s (e2e p50 1650 / max 1900 ms) · #2 done 3.20 s" in results.render()
    assert results.to_json()["rounds"][1]["last_reply_s"] == pytest.approx(3.2)
    many = [Round(i, 50, 0.2 * (i + 1), 0.15, 0.19) for i in range(20)]
    line = Results("custom", "closed", "closed", 50, 1000, 0.0, 0.1, rounds=many).render()
    assert "#3 done 0.60 s (e2e p50 150 / max 190 ms) · … · #19 done 3.80 s" in line and "#4 " not in line


def test_each_process_row_says_how_much_of_its_cpu_the_kernel_took() -> None:
    def proc(name: str, kernel: float | None) -> ProcFigures:
        return ProcFigures(name, "service", 42, 700.0, 0.7, 0.0, 90.0, 95.0, 96.0, 20, 21, kernel_share=kernel)

    rows = [proc("gateway-1", 0.07), proc("nlp-1", None)]
    results = Results("custom", "x", "closed", 1, 1000, 0.0, 0.0, processes=rows)
    text = results.render()
    gateway = next(line for line in text.splitlines() if "gateway-1" in line)
    nlp = next(line for line in text.splitlines() if "nlp-1" in line)
    assert "kernel" in text and " 7% " in gateway and "%      - " in nlp
    assert results.to_json()["processes"][0]["kernel_share"] == pytest.approx(0.07)


def test_report_renders_and_serializes_an_empty_run() -> None:
    results = Results("custom", "nothing", "open", 1, 0, 0.2, 0.1, rate=5.0, duration_s=0.0, arrivals="even")
    text = results.render()
    assert "replies/s" in text and "send lag" in text
    json.dumps(results.to_json(), allow_nan=False)
    assert ceiling(2, 20.0) == pytest.approx(100.0)


def test_host_speed_is_measured_and_reported_with_the_run() -> None:
    loop_ms = reference_loop_ms(repeats=1)
    assert 1.0 < loop_ms < 10_000.0
    results = Results("custom", "nothing", "closed", 1, 0, 0.0, 0.0, host_loop_ms=loop_ms, host_loop_after_ms=250.0)
    assert f"reference loop {loop_ms:.0f} ms of CPU before the run, 250 after" in results.render()
    assert results.to_json()["host_reference_loop_ms"] == {"before": loop_ms, "after": 250.0}
    assert "host speed" not in Results("custom", "nothing", "closed", 1, 0, 0.0, 0.0).render()


def test_the_speed_probe_reports_slices_during_the_load_and_just_before_it() -> None:
    assert 1.0 < slice_ms() < 100_000.0
    assert parse_probe_line("probe 12.5 180.2") == (12.5, 180.2)
    assert parse_probe_line("Traceback (most recent call last):") is None and parse_probe_line("probe x 1") is None
    meter = Meter()
    meter.idle_started, meter.load_started, meter.load_ended = 10.0, 11.0, 20.0
    lines = ["probe 9.5 100", "probe 10.5 150", "probe 12.0 200", "probe 19.9 220", "probe 20.5 90", "noise"]
    idle, load = probe_slices(lines, meter)
    assert (idle, load) == ([150.0], [200.0, 220.0])  # before the idle window and after the load: left out
    results = Results("custom", "x", "closed", 1, 0, 0.0, 0.0, host_loop_ms=100.0)
    results.speed_idle_ms, results.speed_load_ms = idle, load
    assert "probe slices p50 210 (p10–p90 202–218, 2 slices); idle just before 150" in results.render()
    assert results.to_json()["host_probe_ms"]["idle_p50"] == 150.0


@pytest.mark.timeout(30)
def test_the_speed_probe_process_prints_slices_until_it_is_stopped() -> None:
    cmd = [sys.executable, "-m", "bench.host_speed", "--probe", "--every", "0.05"]
    with subprocess.Popen(cmd, cwd=BENCH_ROOT, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = parse_probe_line(proc.stdout.readline())
        assert first is not None and abs(first[0] - time.perf_counter()) < 10  # one clock with this process
        proc.terminate()
        rest = proc.stdout.read()
        assert proc.wait(timeout=10) == 0  # SIGTERM ends it cleanly
    assert all(parse_probe_line(line) is not None for line in rest.splitlines())


def test_help_lists_every_knob_and_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse formats help strings with %: a scenario description with "10 %" crashed `--help`
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    for knob in ("--scenario", "--users", "--rate", "--replicas", "--otlp", "--json", "--profile", "fast:"):
        assert knob in shown


@pytest.mark.timeout(120)
def test_hop_probe_times_every_way_of_reading(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench.hop` against a real nats-server: a line of figures per way of reading."""
    from bench.hop import MODES, cli

    cli(["--count", "12", "--gap-ms", "1"])
    out = capsys.readouterr().out
    assert "12 messages 1 ms apart" in out
    for mode in MODES:
        line = next(line for line in out.splitlines() if line.strip().startswith(mode + " "))
        p50 = float(line.split("p50")[1].split()[0])
        assert 0 < p50 < 1_000_000, line  # microseconds: a delivered message, not a stale one


def _span(trace: int, span: int, parent: int, service: str, name: str, start_ms: float, end_ms: float) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    out = resource.scope_spans.add().spans.add()
    out.trace_id, out.span_id = trace.to_bytes(16, "big"), span.to_bytes(8, "big")
    out.parent_span_id = parent.to_bytes(8, "big") if parent else b""
    out.name = name
    out.kind = Span.SpanKind.SPAN_KIND_CONSUMER if parent else Span.SpanKind.SPAN_KIND_SERVER
    out.start_time_unix_nano, out.end_time_unix_nano = int(start_ms * 1e6), int(end_ms * 1e6)
    return request


def test_timeline_gives_each_step_its_median_offset_from_the_callback(tmp_path: Any) -> None:
    """Three whole-message traces and a duplicate's two-span trace, dumped as the sink writes them:
    offsets count from each trace's root; a step in under half of the messages is left out; a
    repeated name is a step of its own; a torn last record is ignored."""
    from bench.timeline import timeline_of
    from wxbot_devkit.otlp_sink import write_dump

    dump = tmp_path / "spans.otlp"
    with dump.open("wb") as out:
        for n, (t0, hop) in enumerate([(1000.0, 2.0), (5000.0, 4.0), (9000.0, 9.0)], start=1):
            parts = [
                (1, 0, "gateway", "POST /wecom/callback", 0.0, 1.0),
                (2, 1, "safety", "process wxbot.evt.inbound.received", hop, hop + 1),
                (3, 2, "nlp", "POST", hop + 2, hop + 5),
                (4, 3, "nlp", "POST", hop + 6, hop + 7),
            ]
            if n == 1:
                parts.append((5, 1, "gateway", "rare", 0.5, 0.6))
            for span, parent, service, name, start, end in parts:
                write_dump(out, _span(n, span, parent, service, name, t0 + start, t0 + end))
        write_dump(out, _span(7, 1, 0, "gateway", "POST /wecom/callback", 0.0, 1.0))
        write_dump(out, _span(7, 2, 1, "gateway", "dedupe", 0.2, 0.3))
        out.write(b"\x40\x00\x00\x00partial")
    traces, steps = timeline_of(dump)
    assert traces == 3
    assert [(m.service, m.name, m.traces) for m in steps] == [
        ("gateway", "POST /wecom/callback", 3),
        ("safety", "process wxbot.evt.inbound.received", 3),
        ("nlp", "POST", 3),
        ("nlp", "POST", 3),
    ]
    assert (steps[1].start_ms, steps[2].start_ms, steps[3].end_ms) == (4.0, 6.0, 11.0)
    assert steps[2].duration_p50_ms == pytest.approx(3.0)
    results = Results("custom", "x", "closed", 1, 0, 0.0, 0.0, timeline_traces=traces, timeline=steps)
    assert "Where a message's time goes: median over 3 traced messages" in results.render()
    assert results.to_json()["timeline"]["spans"][1]["start_ms"] == 4.0


def test_timeline_needs_the_exported_traces() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "idle", "--timeline"])
    assert parse_args(["--scenario", "steady", "--timeline"]).timeline is True


def _run_figures(replies_per_s: float, ack_p99: float, services_ms: float, lost: int = 0) -> dict[str, Any]:
    return {
        "replies_per_s": replies_per_s,
        "latency_ms": {"callback_ack": {"p99": ack_p99}, "overhead_not_queued": {}},
        "cpu_ms_per_reply": {"services": services_ms, "everything": services_ms + 2},
        "host_reference_loop_ms": {"before": 120.0, "after": 130.0},
        "lost": lost,
        "duplicated": 0,
        "order_violations": 0,
    }


def test_repeated_runs_report_the_median_and_range_of_each_figure() -> None:
    runs = [_run_figures(141.0, 120.0, 4.0), _run_figures(152.0, 100.0, 3.5, lost=1), _run_figures(139.0, 90.0, 4.2)]
    summary = repeat.summary(runs)
    assert summary["figures"]["replies/s"] == {"median": 141.0, "min": 139.0, "max": 152.0}
    assert summary["figures"]["CPU per reply, services"]["median"] == 4.0
    assert "overhead p50, not queued" not in summary["figures"]  # a figure no run had is left out
    assert summary["each_run_replies_per_s"] == [141.0, 152.0, 139.0]
    assert summary["lost"] == 1
    text = repeat.render(runs)
    assert "141.0 (median; 139.0–152.0)" in text and "4.00 ms (median; 3.50–4.20)" in text
    assert "141.0, 152.0, 139.0" in text and "lost / duplicated / order" in text and " 1 / 0 / 0" in text


def test_repeat_needs_one_run_at_least_and_describes_no_single_run() -> None:
    assert parse_args(["--scenario", "burst", "--repeat", "3"]).repeat == 3
    for bad in (["--repeat", "0"], ["--repeat", "2", "--profile", "/tmp/p"], ["--repeat", "2", "--timeline"]):
        with pytest.raises(SystemExit):
            parse_args(["--scenario", "burst", *bad])
