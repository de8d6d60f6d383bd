"""Drive a local wxbot the way WeCom does, with a fake WeCom and a fake LLM, and measure the whole run.

Closed loop (default): each simulated user sends an encrypted text callback, waits for its reply,
then sends the next. Open loop (`--rate`): messages arrive at a fixed rate whatever the replies do,
from users picked at random, so one user may have several messages in flight and the order of its
replies is checked. Either way 10 % of callbacks are delivered twice, as WeCom does when an ack is
slow, and a failed callback is retried up to three times a second apart.

Every process of the run is measured from /proc: CPU per delivered reply, memory, open fds.
`--scenario` picks a preset (burst, fast, steady, idle); knobs given explicitly win over it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiohttp
import uvloop
from redis.asyncio import Redis

from bench import repeat
from bench.host_speed import parse_probe_line, reference_loop_ms
from bench.procstat import Meter
from bench.profiler import Profiler
from bench.report import Results
from bench.scenarios import SCENARIOS
from bench.stats import Sent, check_order, rounds
from bench.timeline import timeline_of
from wxbot_common.runtime import settle_garbage_collector
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom, SentMessage
from wxbot_devkit.launch import Child, free_port
from wxbot_devkit.system import SERVICES, Stack, StackConfig
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_text_xml

CORP_ID = "wwbench000000000001"
AGENT_ID = "1000002"
TOKEN = "BenchToken"
AES_KEY = "26kD8iXhY7SDqeoaZPZDJRZuf3NgJfcC3M9TTHSPjos"
SECRET = "bench-secret"
MSG_ID_BASE = 8_000_000_000_000_000_000
XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
IDLE_WINDOW_S = 1.0
WARMUP_TIMEOUT_S = 30.0
MAX_DRAIN_S = 60.0
# The fakes keep the last few requests only: this process is the measuring instrument, and every
# record it kept survived into the collector's young generation, whose passes then took 5–6 ms of
# CPU each, mid-load — every callback in flight at the time read that much slower.
FAKE_RECORDS = 64
OPEN_LOOP_CONNECTIONS = 16  # an open loop's callbacks at once, at the rates it is run at, with room
BENCH_ROOT = Path(__file__).resolve().parent.parent  # where `python -m bench…` is importable from
PIPELINE = ("gateway", "safety", "nlp", "context")  # the path of a message: the order of the report
# Then the built-in skills (idle unless the model calls them) and the analytics read model (it reads
# every event but is not on a reply's path: its CPU is reported apart from the services').
REPORT_ORDER = (*PIPELINE, "skills", "analytics")
SINK_TOTALS = re.compile(r"received (\d+) spans of (\d+) traces")


class Tracker:
    """Matches each reply the fake WeCom accepts to the message it answers (the fake LLM echoes the text).

    A reply that echoes no message is a notice (an apology when the LLM gave up, a safety notice):
    it names no message, so it is taken as the answer to the oldest unanswered message of its user,
    which is the one it answers whenever the conversation's order holds. When the order does not
    hold the mismatch still shows: as a reply out of order, or as one message answered twice and
    another not at all.

    Called synchronously by the fake, on this process's event loop, so arrival times are exact.
    """

    def __init__(self) -> None:
        self.owner: dict[str, tuple[str, int]] = {}  # tag -> (user, index of the message for that user)
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}  # the callback attempt that got 200
        self.arrived_at: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.per_user: defaultdict[str, list[int]] = defaultdict(list)  # message indices in reply order
        self.notice_tags: set[str] = set()  # messages whose first reply was a notice
        self.notices: Counter[str] = Counter()  # notice text -> how many were sent
        self.unexpected = 0
        self.last_arrival = 0.0
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._tags_of: defaultdict[str, list[str]] = defaultdict(list)  # user -> tags in send order
        self._answered_upto: Counter[str] = Counter()  # user -> index in _tags_of before which all are answered

    def expect(self, tag: str, user: str, seq: int) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.owner[tag] = (user, seq)
        self._tags_of[user].append(tag)
        self._waiting[tag] = fut
        return fut

    def _oldest_unanswered(self, user: str) -> str | None:
        tags, i = self._tags_of.get(user, []), self._answered_upto[user]
        while i < len(tags) and tags[i] in self.arrived_at:
            i += 1
        self._answered_upto[user] = i
        return tags[i] if i < len(tags) else None

    def on_message(self, message: SentMessage) -> None:
        now = time.perf_counter()
        tag = message.content.removeprefix("echo: ")
        owner = self.owner.get(tag)
        notice = owner is None
        if notice:
            oldest = self._oldest_unanswered(message.touser)
            if oldest is None:
                self.unexpected += 1
                return
            tag, owner = oldest, self.owner[oldest]
            self.notices[message.content] += 1
        assert owner is not None
        self.counts[tag] += 1
        self.last_arrival = now
        if tag in self.arrived_at:
            return
        self.arrived_at[tag] = now
        if notice:
            self.notice_tags.add(tag)
        self.per_user[owner[0]].append(owner[1])
        fut = self._waiting.pop(tag, None)
        if fut is not None and not fut.done():
            fut.set_result(now)


class Generator:
    """Sends callbacks as WeCom would and records acks, failures and duplicates into `results`."""

    def __init__(
        self,
        args: argparse.Namespace,
        session: aiohttp.ClientSession,
        urls: list[str],
        tracker: Tracker,
        results: Results,
        user_prefix: str = "bench-user-",
        first_msg_id: int = MSG_ID_BASE,
    ) -> None:
        self.args = args
        self.user_prefix = user_prefix
        self.first_msg_id = first_msg_id
        self.session = session
        self.urls = [f"{u}/wecom/callback" for u in urls]
        self.tracker = tracker
        self.results = results
        self.crypto = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
        self.rng = random.Random(42)
        self._next_id = 0
        self._per_user: Counter[str] = Counter()

    async def _post(self, url: str, params: dict[str, str], body: bytes, what: str = "") -> bool:
        try:
            async with self.session.post(url, params=params, data=body, headers=XML_HEADERS) as resp:
                text = await resp.read()
                if resp.status == 200:
                    return True
                reason = f"HTTP {resp.status} {text[:40].decode(errors='replace')}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
        self.results.failure_reasons[what + reason] += 1
        return False

    async def send(self, user_n: int) -> asyncio.Future[float]:
        """One message from user `user_n`: callback, WeCom's retries and duplicate; returns the reply's future."""
        user = f"{self.user_prefix}{user_n:05d}"
        seq = self._per_user[user]
        self._per_user[user] += 1
        msg_id = str(self.first_msg_id + self._next_id)
        self._next_id += 1
        tag = f"{user} #{seq}"
        now = str(int(time.time()))
        inner = build_inner_text_xml(
            to_user=CORP_ID, from_user=user, create_time=int(now), content=tag, msg_id=msg_id, agent_id=AGENT_ID
        )
        params, envelope = self.crypto.build_callback(
            inner, timestamp=now, nonce=str(self.rng.randrange(10**9)), to_user_name=CORP_ID, agent_id=AGENT_ID
        )
        body = envelope.encode()
        home = user_n % len(self.urls)
        url = self.urls[home]
        reply = self.tracker.expect(tag, user, seq)
        self.results.sent += 1
        sent_at = time.perf_counter()
        self.tracker.sent_at[tag] = sent_at
        ok = await self._post(url, params, body)
        self.results.ack_s.append(time.perf_counter() - sent_at)
        for retry in range(1, 4):  # WeCom retries a failed callback, at most three more times, a second apart
            if ok:
                break
            self.results.callbacks_failed += 1
            await asyncio.sleep(1.0)  # WeCom's retry interval, not a wait for a condition
            # WeCom calls one URL; the load balancer behind it sends a retry to another replica.
            ok = await self._post(self.urls[(home + retry) % len(self.urls)], params, body)
        if ok:
            self.tracker.acked_at[tag] = time.perf_counter()
        if self.rng.random() < self.args.retry_rate:
            self.results.retries_sent += 1
            await self._post(url, params, body, "duplicate: ")
        return reply

    async def closed_user(self, n: int) -> None:
        for _ in range(self.args.messages):
            reply = await self.send(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply, self.args.reply_timeout)
            if self.args.think_time:
                await asyncio.sleep(self.rng.uniform(0, 2 * self.args.think_time))

    async def closed_loop(self) -> None:
        await asyncio.gather(*(self.closed_user(n) for n in range(self.args.users)))

    def arrivals(self) -> Iterator[float]:
        """Send times (seconds from the start) of the open-loop messages: Poisson or evenly spaced;
        without end when `args.duration` is None (the caller stops the loop)."""
        count = None if self.args.duration is None else round(self.args.rate * self.args.duration)
        t = 0.0
        for k in itertools.count():
            if count is not None and k >= count:
                return
            yield t
            t = (k + 1) / self.args.rate if self.args.arrivals == "even" else t + self.rng.expovariate(self.args.rate)

    def schedule(self) -> list[float]:
        return list(self.arrivals())

    async def _open_message(self, n: int) -> None:
        reply = await self.send(n)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reply, self.args.reply_timeout)

    async def open_loop(self, stop: asyncio.Event | None = None) -> None:
        """Send at the planned times until the plan ends or `stop` is set; then wait for the sends
        (each with WeCom's retries) and their replies, up to `--reply-timeout`."""
        tasks: set[asyncio.Task[None]] = set()
        # A finite plan is drawn whole first, so a seed gives the same arrivals and users as before.
        plan = self.arrivals() if self.args.duration is None else iter(self.schedule())
        start = time.perf_counter()
        for at in plan:
            delay = start + at - time.perf_counter()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            if stop is not None and stop.is_set():
                break
            self.results.send_lag_s.append(max(0.0, time.perf_counter() - start - at))
            task = asyncio.create_task(self._open_message(self.rng.randrange(self.args.users)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


def replicas_of(args: argparse.Namespace, default: int = 1) -> dict[str, int]:
    """`--replicas`: `service=count` items, and a bare count for every service of the pipeline not named."""
    asked: dict[str, int] = {}
    for item in args.replicas or []:
        if item.isdigit():
            default = int(item)
            continue
        service, _, count = item.partition("=")
        if service not in SERVICES or not count.isdigit():
            raise SystemExit(
                f"--replicas {item!r}: want a count, or service=count with service in {', '.join(SERVICES)}"
            )
        asked[service] = int(count)
    # The skills service is not on a message's path: one replica unless named (`skills=2`).
    return {s: max(1, asked.get(s, default)) for s in PIPELINE} | {
        s: max(0, n)
        for s, n in asked.items()
        if s not in PIPELINE  # skills=0, analytics=0: left out
    }


async def start_sink(run_dir: Path, dump: Path | None = None) -> tuple[Child, dict[str, str]]:
    """The OTLP receiver in a process of its own, so its CPU shows apart from the load generator's;
    with `dump`, it also writes every export request there (for the timeline)."""
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "wxbot_devkit.otlp_sink", "--quiet"]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    child = Child("otlp-sink", command + (["--dump", str(dump)] if dump else []), cwd=run_dir)
    await child.start()
    deadline = time.monotonic() + 30.0
    while not any(line.startswith("OTLP/HTTP") for line in child.lines):
        child.raise_if_exited()
        if time.monotonic() > deadline:
            raise TimeoutError(f"OTLP sink did not start:\n{child.tail()}")
        await asyncio.sleep(0.05)
    endpoint = {"grpc": f"http://127.0.0.1:{grpc_port}", "http/protobuf": f"http://127.0.0.1:{http_port}"}
    return child, endpoint


async def drain(tracker: Tracker, quiet_s: float, max_s: float = MAX_DRAIN_S) -> None:
    """Wait until no reply came for `quiet_s` (late duplicates show, batched spans get exported)."""
    deadline = time.perf_counter() + max_s
    load_end = time.perf_counter()
    while time.perf_counter() < deadline:
        since = time.perf_counter() - max(load_end, tracker.last_arrival)
        if since >= quiet_s:
            return
        await asyncio.sleep(min(0.1, quiet_s - since))


def drain_seconds(args: argparse.Namespace) -> float:
    """The quiet period; with export on, longer than the span batch delay so the last batch is counted."""
    if not args.otlp:
        return float(args.quiet)
    batch_delay_s = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000
    return max(float(args.quiet), batch_delay_s + 1.0)


def service_env(
    wecom: FakeWeCom,
    llm: FakeLLM,
    otlp: dict[str, str] | None = None,
    otlp_protocol: str = "grpc",
    sampler_ratio: float | None = None,
) -> dict[str, str]:
    """The services' variables for a run against the fakes: the bench's app, no rate limits, quiet logs.

    Both per-user limits are off: a simulated user sends far more than a person (a 30-minute soak
    at 20 messages/s from 50 users is 720 each), and past `SAFETY_RATE_PER_DAY` (500) the bot
    rightly answers one notice and then nothing, which a run would count as lost replies."""
    env = {
        "WECOM_CORP_ID": CORP_ID,
        "WECOM_AGENT_ID": AGENT_ID,
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": TOKEN,
        "WECOM_ENCODING_AES_KEY": AES_KEY,
        "WECOM_API_BASE": wecom.base_url,
        "LLM_BASE_URL": f"{llm.base_url}/v1",
        "SAFETY_RATE_PER_MINUTE": "0",
        "SAFETY_RATE_PER_DAY": "0",
        "LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "otlp" if otlp else "none",
    }
    if otlp:
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = otlp_protocol
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp[otlp_protocol]
    if sampler_ratio is None:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    else:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(sampler_ratio)
    return env


def new_results(args: argparse.Namespace, replicas: dict[str, int]) -> Results:
    scenario = SCENARIOS.get(args.scenario) if args.scenario else None
    is_open = args.rate is not None
    planned = round(args.rate * args.duration) if is_open else args.users * args.messages
    return Results(
        scenario=scenario.name if scenario else "custom",
        description=scenario.description if scenario else "knobs from the command line",
        mode="open" if is_open else "closed",
        users=args.users,
        planned=planned,
        llm_latency_s=args.llm_latency,
        retry_rate=args.retry_rate,
        rate=args.rate,
        duration_s=args.duration if is_open else None,
        arrivals=args.arrivals if is_open else "",
        replicas=replicas,
        backend_nice=args.backend_nice,
        otlp=args.otlp_protocol if args.otlp else None,
        sampler=(
            "parentbased_always_on"
            if args.sampler_ratio is None
            else f"parentbased_traceidratio={args.sampler_ratio:g}"
        ),
    )


async def run(args: argparse.Namespace) -> Results:
    replicas = replicas_of(args)
    results = new_results(args, replicas)
    results.host_loop_ms = reference_loop_ms()
    tracker = Tracker()
    wecom = FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET, on_message=tracker.on_message, record_limit=FAKE_RECORDS)
    llm = FakeLLM(latency_s=args.llm_latency, record_limit=FAKE_RECORDS)
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        os.environ.pop(var, None)  # the generic variables set below must decide
    meter = Meter()
    sink: Child | None = None
    profiler: Profiler | None = None
    dump_dir = tempfile.TemporaryDirectory(prefix="wxbot-bench-spans-") if args.timeline and args.otlp else None
    dump = Path(dump_dir.name) / "spans.otlp" if dump_dir is not None else None
    await wecom.start()
    await llm.start()
    try:
        with tempfile.TemporaryDirectory(prefix="wxbot-bench-") as tmp:
            run_dir = Path(tmp)
            otlp: dict[str, str] | None = None
            if args.otlp:
                sink, otlp = await start_sink(run_dir, dump)
            config = StackConfig(
                run_dir=run_dir,
                ports="free",
                extra_env=service_env(wecom, llm, otlp, args.otlp_protocol, args.sampler_ratio),
                replicas=replicas,
                gateway_delivery=args.gateway_delivery,
                backend_nice=args.backend_nice,
            )
            async with Stack(config) as stack:
                for r in sorted(stack.replicas, key=lambda r: (REPORT_ORDER.index(r.service), r.index)):
                    name = f"{r.service}-{r.index + 1}" if r.role == "all" else r.child.name
                    meter.add(name, "readmodel" if r.service == "analytics" else "service", r.child.pid)
                meter.add("nats-server", "infra", stack.nats.child.pid)
                meter.add("redis-server", "infra", stack.redis.child.pid)
                if sink is not None:
                    meter.add("otlp-sink", "sink", sink.pid)
                meter.add("load generator + fakes", "bench", None)
                if args.profile:
                    targets = [(t.name, t.pid) for t in meter.tracked if t.role == "service" and t.pid is not None]
                    profiler = Profiler(Path(args.profile), targets)
                    await profiler.start()
                    for name, pid in profiler.pids:
                        meter.add(f"py-spy {name}", "profiler", pid)
                before = await redis_calls(stack.redis.url)
                probe = Child("speed-probe", [sys.executable, "-m", "bench.host_speed", "--probe"], cwd=BENCH_ROOT)
                await probe.start()
                meter.add("speed probe", "profiler", probe.pid)
                # This process is WeCom, the LLM and the users: with the default collector thresholds
                # its full passes stalled all three for ~0.1 s at a time inside the measured window.
                settle_garbage_collector()
                try:
                    await drive(args, stack.gateway_urls, tracker, results, meter, wecom, llm)
                finally:
                    await probe.stop()
                results.speed_idle_ms, results.speed_load_ms = probe_slices(probe.lines, meter)
                after = await redis_calls(stack.redis.url)
                results.host_loop_after_ms = reference_loop_ms()
                results.redis_calls = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
                if profiler is not None:
                    results.profile_dir = str(profiler.out_dir)
                    results.profiles = await profiler.stop()
                    results.profile_errors = profiler.errors
                    profiler = None
    finally:
        if profiler is not None:
            await profiler.stop()
        if sink is not None:
            await sink.stop()  # after the services, which flush their last spans when they stop
        await llm.stop()
        await wecom.stop()
    if sink is not None:
        for line in sink.lines:
            if m := SINK_TOTALS.search(line):
                results.sink_spans, results.sink_traces = int(m[1]), int(m[2])
    if dump_dir is not None and dump is not None:
        with dump_dir:
            results.timeline_traces, results.timeline = timeline_of(dump)
    finish(results, tracker, llm, meter, args)
    return results


def probe_slices(lines: Iterable[str], meter: Meter) -> tuple[list[float], list[float]]:
    """The speed probe's slices (bench.host_speed) in the idle window before the load and in the load phase."""
    idle: list[float] = []
    load: list[float] = []
    for line in lines:
        if (parsed := parse_probe_line(line)) is None:
            continue
        at, ms = parsed
        if meter.idle_started <= at < meter.load_started:
            idle.append(ms)
        elif meter.load_started <= at <= meter.load_ended:
            load.append(ms)
    return idle, load


async def redis_calls(url: str) -> dict[str, int]:
    """How many times Redis ran each command so far (INFO commandstats): which round trips a reply costs."""
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if isinstance(v, dict)}


async def warm_up(
    args: argparse.Namespace, session: aiohttp.ClientSession, urls: list[str], wecom: FakeWeCom, llm: FakeLLM
) -> None:
    """A few messages from users of their own before anything is measured, so that one-off costs (WeCom
    token, first connections, lazy imports) stay out of the figures; their replies are tracked apart."""
    if args.warmup <= 0:
        return
    tracker, hook = Tracker(), wecom.on_message
    wecom.on_message = tracker.on_message
    scratch = Results("warm-up", "", "closed", args.warmup, args.warmup, args.llm_latency, 0.0)
    generator = Generator(args, session, urls, tracker, scratch, "bench-warmup-", MSG_ID_BASE + 10**12)
    try:
        replies = await asyncio.gather(*(generator.send(n) for n in range(args.warmup)))
        await asyncio.wait(replies, timeout=WARMUP_TIMEOUT_S)
    finally:
        wecom.on_message = hook
    llm.max_in_flight = llm.in_flight
    at_once = args.users if args.rate is None else min(args.users, OPEN_LOOP_CONNECTIONS)
    await open_connections(session, urls, math.ceil(at_once / len(urls)))


async def open_connections(session: aiohttp.ClientSession, urls: list[str], per_url: int) -> None:
    """Open the connections the load will hold at once, as a sender that has been calling for a while
    has them: otherwise the first round's callbacks each wait for a TCP handshake and the gateway's
    accept, all at the same moment, which no later round repeats. Concurrent requests each hold a
    connection of their own until answered, so `per_url` of them leave that many in the pool."""

    async def health(url: str) -> None:
        async with session.get(f"{url}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(health(url) for url in urls for _ in range(per_url)))


async def drive(
    args: argparse.Namespace,
    urls: list[str],
    tracker: Tracker,
    results: Results,
    meter: Meter,
    wecom: FakeWeCom,
    llm: FakeLLM,
) -> None:
    """Warm-up, idle window, load phase, drain; the meter reads every process at each mark."""
    open_loop = args.rate is not None
    connector = aiohttp.TCPConnector(limit=0 if open_loop else max(1, args.users, args.warmup), limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(args, session, urls, wecom, llm)
        llm_calls_before = llm.calls
        generator = Generator(args, session, urls, tracker, results)
        meter.mark_idle()
        await asyncio.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for a condition
        meter.mark_start()
        load = asyncio.create_task(generator.open_loop() if open_loop else generator.closed_loop())
        try:
            await asyncio.wait_for(asyncio.shield(load), args.max_time)
        except TimeoutError:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
            results.stopped_early = f"the load did not finish within --max-time {args.max_time:g} s"
        await drain(tracker, drain_seconds(args))
        meter.mark_end()
        results.llm_calls = llm.calls - llm_calls_before
        results.server_ack = await callback_buckets(session, urls)


CALLBACK_BUCKET = re.compile(r"^wxbot_http_request_seconds_bucket\{([^}]*)\} ([0-9.e+]+)$", re.M)
CALLBACK_LABELS = ('method="POST"', 'route="/wecom/callback"')
LE_LABEL = re.compile(r'le="([^"]+)"')


async def callback_buckets(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, int]:
    """The gateways' own callback-duration histogram (summed over replicas), from their /metrics."""
    buckets: Counter[str] = Counter()
    for url in urls:
        try:
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
        except aiohttp.ClientError:
            continue
        for labels, count in CALLBACK_BUCKET.findall(text):
            le = LE_LABEL.search(labels)
            if le and all(label in labels for label in CALLBACK_LABELS):
                buckets[le[1]] += int(float(count))
    return dict(buckets)


def e2e_alone(tracker: Tracker) -> list[float]:
    """End-to-end times of the messages sent while no earlier message of the same user was unanswered.

    A message sent while its user's previous one is still with the LLM waits for that answer first
    (the bot answers a conversation in order, with the previous exchange in its context): that wait
    is the order guarantee at work, not the pipeline's overhead.
    """
    tag_of = {owner: tag for tag, owner in tracker.owner.items()}
    alone: list[float] = []
    for tag, arrived in tracker.arrived_at.items():
        user, index = tracker.owner[tag]
        previous = tag_of.get((user, index - 1))
        if previous is None or tracker.arrived_at.get(previous, math.inf) <= tracker.sent_at[tag]:
            alone.append(arrived - tracker.sent_at[tag])
    return alone


def finish(results: Results, tracker: Tracker, llm: FakeLLM, meter: Meter, args: argparse.Namespace) -> None:
    results.replies = len(tracker.arrived_at)
    results.lost = results.sent - results.replies
    e2e = [tracker.arrived_at[tag] - tracker.sent_at[tag] for tag in tracker.arrived_at]
    results.e2e_s = e2e
    results.e2e_alone_s = e2e_alone(tracker)
    results.late = sum(1 for e in e2e if e > args.reply_timeout)
    results.duplicated = sum(c - 1 for c in tracker.counts.values() if c > 1)
    results.unexpected = tracker.unexpected
    sent = {
        owner: Sent(tracker.sent_at[tag], tracker.acked_at.get(tag, math.inf))
        for tag, owner in tracker.owner.items()
        if tag in tracker.sent_at
    }
    order = check_order(tracker.per_user, sent)
    results.order_violations, results.order_overlapping = order.violations, order.overlapping
    results.order_examples = order.examples
    if tracker.arrived_at:
        results.wall_s = max(tracker.arrived_at.values()) - meter.load_started
    if results.mode == "closed":
        results.rounds = rounds(tracker.owner, tracker.sent_at, tracker.arrived_at, meter.load_started)
    results.llm_max_in_flight = llm.max_in_flight
    results.cpu_window_s = meter.window_s
    results.idle_window_s = meter.load_started - meter.idle_started
    results.processes = meter.figures(results.replies)
    if (box := meter.box_ms()) is not None:
        results.box_busy_ms, results.box_steal_ms, results.box_capacity_ms = box


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        help="a preset: " + "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values()).replace("%", "%%"),
    )
    p.add_argument("--users", type=int, default=200, help="simulated users (closed loop: talking at once)")
    p.add_argument("--messages", type=int, default=5, help="closed loop: messages per user")
    p.add_argument("--rate", type=float, default=None, help="open loop: messages per second (sets the mode)")
    p.add_argument("--duration", type=float, default=20.0, help="open loop: seconds of arrivals")
    p.add_argument("--arrivals", choices=("poisson", "even"), default="poisson", help="open loop: arrival process")
    p.add_argument("--llm-latency", type=float, default=1.0, help="fake LLM answer time, seconds")
    p.add_argument("--retry-rate", type=float, default=0.1, help="share of callbacks WeCom delivers twice")
    p.add_argument("--think-time", type=float, default=0.0, help="closed loop: mean pause before the next message")
    p.add_argument("--reply-timeout", type=float, default=60.0, help="a reply later than this counts as late")
    p.add_argument("--quiet", type=float, default=3.0, help="seconds without replies that end the run (drain)")
    p.add_argument(
        "--warmup", type=int, default=2, help="messages sent (and answered) before measuring, from users of their own"
    )
    p.add_argument("--max-time", type=float, default=300.0, help="stop sending after this many seconds of load")
    p.add_argument("--replicas", nargs="*", help="service=count, e.g. nlp=2 safety=2")
    p.add_argument(
        "--gateway-delivery",
        type=int,
        default=0,
        help="send replies from this many processes of their own (GATEWAY_ROLE=delivery); 0 = the gateways do",
    )
    p.add_argument(
        "--backend-nice",
        type=int,
        default=StackConfig.backend_nice,
        choices=range(20),
        metavar="0-19",
        help="CPU_NICE of every process but the gateways answering callbacks, as `make run` sets it; 0 = all equal",
    )
    p.add_argument(
        "--otlp",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="export spans to an OTLP receiver running as its own process",
    )
    p.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument(
        "--sampler-ratio",
        type=float,
        default=None,
        help="trace this share of messages (parentbased_traceidratio); default: every message",
    )
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run N times, each on a fresh stack, and print the median and range of the headline figures "
        "(a shared or virtual machine drifts by several per cent between runs); --json then holds every run",
    )
    p.add_argument("--profile", metavar="DIR", help="record a py-spy profile of each service process into DIR")
    p.add_argument(
        "--timeline",
        action="store_true",
        help="with --otlp: where a message's time goes — each span's median offset, read from the exported traces",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line knobs over the scenario's presets over the defaults."""
    p = parser()
    first, _ = p.parse_known_args(argv)
    if first.scenario:
        p.set_defaults(**SCENARIOS[first.scenario].defaults)
    args = p.parse_args(argv)
    if args.timeline and not args.otlp:
        p.error("--timeline reads the traces the services export: add --otlp (the idle scenario exports none)")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.repeat > 1 and (args.profile or args.timeline):
        p.error("--profile and --timeline describe one run: leave --repeat at 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs: list[dict[str, object]] = []
    for n in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"=== run {n} of {args.repeat} ===", flush=True)
        results = uvloop.run(run(args))
        print(results.render(), flush=True)
        runs.append(results.to_json())
    document: object = runs[0]
    if args.repeat > 1:
        print("\n" + repeat.render(runs), flush=True)
        document = {"summary": repeat.summary(runs), "runs": runs}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nfigures written to {path}")
