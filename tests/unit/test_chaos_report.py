"""The pure parts of `make chaos` and `make soak`: matching replies and notices to messages, the
per-fault windows, recovery times, and the verdicts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bench.chaos import parse_args as chaos_args
from bench.chaos_report import LEAD_S, SUSTAIN_S, FaultMark, analyse, baseline_threshold
from bench.faults import AofHistory
from bench.load import Tracker, replicas_of
from bench.soak import ProcessTrace, SoakFigures, _spread
from bench.soak import parse_args as soak_args
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import SentMessage

APOLOGY = "Sorry, I cannot answer right now."


def reply(user: str, content: str) -> SentMessage:
    return SentMessage(user, "text", content, 1, 0.0, "m")


class Clock:
    """Drives a Tracker with chosen times instead of time.perf_counter()."""

    def __init__(self, tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.tracker = tracker
        monkeypatch.setattr("bench.load.time.perf_counter", lambda: self.now)

    def send(self, user: str, seq: int, at: float, acked: bool = True) -> str:
        tag = f"{user} #{seq}"
        self.tracker.expect(tag, user, seq)
        self.tracker.sent_at[tag] = at
        if acked:
            self.tracker.acked_at[tag] = at + 0.01
        return tag

    def arrive(self, user: str, content: str, at: float) -> None:
        self.now = at
        self.tracker.on_message(reply(user, content))


async def test_a_notice_answers_the_oldest_unanswered_message_of_its_user(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker()
    clock = Clock(tracker, monkeypatch)
    a0, a1, a2 = (clock.send("a", i, at=float(i)) for i in range(3))
    clock.arrive("a", f"echo: {a0}", 0.5)
    clock.arrive("a", APOLOGY, 1.5)  # the LLM gave up on #1
    clock.arrive("a", f"echo: {a2}", 2.5)
    assert tracker.notice_tags == {a1} and tracker.notices == {APOLOGY: 1}
    assert tracker.per_user["a"] == [0, 1, 2] and all(tracker.counts[t] == 1 for t in (a0, a1, a2))
    clock.arrive("a", APOLOGY, 3.0)  # nothing left unanswered: a reply to no message
    clock.arrive("nobody", APOLOGY, 3.0)
    assert tracker.unexpected == 2


async def test_a_notice_overtaking_a_reply_shows_as_a_fault_not_as_success(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker()
    clock = Clock(tracker, monkeypatch)
    b0, b1 = clock.send("b", 0, at=0.0), clock.send("b", 1, at=1.0)
    clock.arrive("b", APOLOGY, 1.5)  # meant for #1, but #0 is still unanswered: taken as #0's
    clock.arrive("b", f"echo: {b0}", 2.0)  # #0's real reply: #0 answered twice
    assert tracker.counts[b0] == 2 and b1 not in tracker.arrived_at  # duplicated, and #1 lost


def run_with_faults(monkeypatch: pytest.MonkeyPatch) -> tuple[Tracker, list[FaultMark]]:
    """A baseline, then a kill at t=10 (healed at 12) and an outage at t=30 (healed at 40)."""
    tracker = Tracker()
    clock = Clock(tracker, monkeypatch)
    for i in range(10):  # baseline: every 0.2 s answered
        tag = clock.send("u", i, at=float(i))
        clock.arrive("u", f"echo: {tag}", i + 0.2)
    late = clock.send("u", 10, at=9.0)  # in flight at the kill (sent within LEAD_S before it): 6 s late
    clock.arrive("u", f"echo: {late}", 15.0)
    for i, at in enumerate((10.5, 11.0, 11.5, 13.0, 14.0, 20.0, 25.0), start=11):
        tag = clock.send(f"v{i}", 0, at=at)
        clock.arrive(f"v{i}", f"echo: {tag}", at + (3.0 if at < 12 else 0.2))
    clock.send("w", 0, at=31.0, acked=False)  # WeCom gave up on this callback: refused
    lost = clock.send("w", 1, at=32.0)  # accepted, never answered
    clock.send("x", 0, at=33.0)
    clock.arrive("x", APOLOGY, 33.5)  # a notice instead of the answer
    tag = clock.send("y", 0, at=41.0)
    clock.arrive("y", f"echo: {tag}", 41.2)
    clock.arrive("y", f"echo: {tag}", 41.3)  # sent twice
    marks = [FaultMark("SIGKILL nlp-1", 10.0, 12.0, "pid 1", downtime_s=1.5), FaultMark("WeCom refuses", 30.0, 40.0)]
    assert lost not in tracker.arrived_at
    return tracker, marks


async def test_windows_split_the_run_at_each_fault_and_count_what_went_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker, marks = run_with_faults(monkeypatch)
    figures = analyse(tracker, marks, 0.0, 45.0, {"description": "test"})
    base, kill, outage = figures.windows
    assert base.sent == 8 and base.end_s == 10.0 - LEAD_S and base.clean  # sent from t=8 on: the kill's
    assert figures.threshold_s == pytest.approx(baseline_threshold([0.2] * 8)) == 0.5
    assert kill.sent == 10 and kill.lost == kill.duplicated == kill.refused == 0 and kill.fault_s == 1.5
    assert kill.e2e_ms["max"] == pytest.approx(6000.0)
    assert kill.first_reply_s == pytest.approx(3.2)  # the one sent at t=13, answered at 13.2
    assert kill.recovered_s == pytest.approx(3.0)  # from t=13 on, every send answered within the threshold
    assert kill.disturbed_s == pytest.approx(5.0)  # the reply that came at t=15
    assert (outage.sent, outage.refused, outage.lost, outage.duplicated, outage.notices) == (4, 1, 1, 1, 1)
    assert not outage.clean and not figures.passed
    assert outage.recovered_s == pytest.approx(11.0) and outage.fault_s == pytest.approx(10.0)
    text = figures.render()
    assert "SIGKILL nlp-1" in text and "FAIL" in text
    json.dumps(figures.to_json(), allow_nan=False)


async def test_recovery_needs_a_sustained_good_stretch(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker()
    clock = Clock(tracker, monkeypatch)
    for i in range(5):
        tag = clock.send("b", i, at=float(i) / 10)
        clock.arrive("b", f"echo: {tag}", i / 10 + 0.1)
    # After the fault at 10: good at 11, bad at 12 (late), then good every second until 20.
    arrivals = []
    for i, at in enumerate([11.0, 12.0, *[13.0 + k for k in range(8)]]):
        tag = clock.send("c", i, at=at)
        arrivals.append((at + (5.0 if at == 12.0 else 0.1), f"echo: {tag}"))
    for at, content in sorted(arrivals):
        clock.arrive("c", content, at)
    figures = analyse(tracker, [FaultMark("f", 10.0, 10.0)], 0.0, 21.0, {})
    window = figures.windows[1]
    assert window.recovered_s == pytest.approx(3.0)  # 11 is followed by a bad one within SUSTAIN_S
    assert SUSTAIN_S > 1.0
    assert window.order_violations == 1 and window.order_examples == ["c: #1 after #5"]  # #1 came at t=17


def test_cli_defaults_are_the_documented_scenario() -> None:
    chaos = chaos_args([])
    assert (chaos.users, chaos.rate, chaos.llm_latency, chaos.wecom_outage) == (50, 50.0, 0.3, 30.0)
    assert replicas_of(chaos, default=2) == {"gateway": 2, "safety": 2, "nlp": 2, "context": 2}
    mixed = chaos_args(["--replicas", "1", "nlp=2", "gateway=2"])
    assert replicas_of(mixed, default=2) == {"gateway": 2, "safety": 1, "nlp": 2, "context": 1}
    assert chaos.faults == ["gateway", "safety", "nlp", "context", "nats", "redis", "redis-loss", "wecom", "llm"]
    assert chaos.duration is None  # the load runs until the faults are done
    soak = soak_args(["--duration", "120"])
    assert (soak.rate, soak.duration, soak.warmup_s) == (20.0, 120.0, 30.0)
    assert soak_args([]).warmup_s == 180.0


def test_soak_verdict_and_rendering() -> None:
    config = {"rate": 20.0, "duration": 60.0, "users": 5, "llm_latency": 0.3, "replicas": ["2"]}
    steady = ProcessTrace("nlp-1", "service", 1, [100.0, 101.0, 104.0], [20, 21, 21], 101.0, 104.0, 110.0, 21, 21)
    leaky = ProcessTrace("nlp-2", "service", 2, [100.0, 101.0, 120.0], [20, 21, 30], 101.0, 120.0, 120.0, 21, 30)
    figures = SoakFigures(config, [steady], [0.0, 30.0, 60.0], 30.0, lag_after={"d": {"pending": 0, "ack_pending": 0}})
    assert figures.passed and steady.growth == pytest.approx(104 / 101 - 1)
    figures.processes.append(leaky)
    assert not leaky.rss_ok and not leaky.fds_ok and not figures.passed
    # a pool that grew to the load's peak in the first half is no leak; climbing after it is
    pooled = ProcessTrace("safety-1", "service", 3, [], [], 50.0, 50.0, 50.0, fds_warm=24, fds_end=28)
    assert not pooled.fds_ok
    pooled.fds_first_half = 27
    assert pooled.fds_ok
    pooled.fds_end = 31
    assert not pooled.fds_ok
    assert "nlp-2" in figures.render() and "FAIL" in figures.render()
    json.dumps(figures.to_json(), allow_nan=False)
    assert _spread(3, 8) == [0, 1, 2] and _spread(100, 3) == [0, 50, 99]


async def test_the_append_only_file_history_gives_its_size_a_second_ago(tmp_path: Path) -> None:
    aof = AofHistory(tmp_path, every_s=0.01)
    with pytest.raises(FileNotFoundError):
        aof.path()
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.1.incr.aof").write_bytes(b"x" * 10)
    assert aof.path().name == "appendonly.aof.1.incr.aof"  # Redis 7's layout
    single = tmp_path / "appendonly.aof"  # Redis 6's
    single.write_bytes(b"*1\r\n" * 10)
    sampler = asyncio.create_task(aof.run())
    try:
        await wait_until(lambda: len(aof.samples) >= 2, 5, "two samples")
        grown_at = time.monotonic()
        single.write_bytes(b"*1\r\n" * 30)
        await wait_until(lambda: aof.samples[-1][1] == 120, 5, "a sample of the grown file")
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    assert aof.size_at(grown_at) == 40 and aof.size_at(time.monotonic()) == 120
    with pytest.raises(RuntimeError):
        aof.size_at(grown_at - 60)
