"""Simulated WeCom users against a local wxbot with fake WeCom and LLM servers.

Each user sends an encrypted text callback, waits for its reply like a person, then sends the
next one. A share of callbacks is delivered twice (as WeCom does when an ack is slow) to measure
duplicates. Replies are matched to messages by the text the fake LLM echoes back.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import uvloop

from bench.report import Results
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.system import Stack, StackConfig
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_text_xml

CORP_ID = "wwbench000000000001"
AGENT_ID = "1000002"
TOKEN = "BenchToken"
AES_KEY = "26kD8iXhY7SDqeoaZPZDJRZuf3NgJfcC3M9TTHSPjos"
SECRET = "bench-secret"


class ReplyWatcher:
    """Resolves one future per expected reply as the fake WeCom records messages."""

    def __init__(self, wecom: FakeWeCom) -> None:
        self._wecom = wecom
        self._seen = 0
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.counts: Counter[str] = Counter()

    def expect(self, tag: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[tag] = fut
        return fut

    def poll(self) -> None:
        msgs = self._wecom.messages
        for m in msgs[self._seen :]:
            tag = m.content.removeprefix("echo: ")
            self.counts[tag] += 1
            fut = self.waiting.get(tag)
            if fut is not None and not fut.done():
                fut.set_result(m.received_at)
        self._seen = len(msgs)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.poll()
            await asyncio.sleep(0.005)  # a polling interval, not a synchronisation
        self.poll()


async def post_callback(client: httpx.AsyncClient, params: dict[str, str], body: str, results: Results) -> bool:
    try:
        resp = await client.post("/wecom/callback", params=params, content=body)
    except httpx.HTTPError as exc:
        results.failure_reasons[type(exc).__name__] += 1
        return False
    if resp.status_code != 200:
        results.failure_reasons[f"HTTP {resp.status_code} {resp.text[:40]}"] += 1
    return resp.status_code == 200


async def one_user(
    n: int,
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    crypto: CallbackCrypto,
    watcher: ReplyWatcher,
    results: Results,
    rng: random.Random,
) -> None:
    user = f"bench-user-{n:05d}"
    for i in range(args.messages):
        tag = f"{user} #{i}"
        msg_id = str(8_000_000_000_000_000_000 + n * 10_000 + i)
        inner = build_inner_text_xml(
            to_user=CORP_ID,
            from_user=user,
            create_time=int(time.time()),
            content=tag,
            msg_id=msg_id,
            agent_id=AGENT_ID,
        )
        params, body = crypto.build_callback(
            inner,
            timestamp=str(int(time.time())),
            nonce=str(rng.randrange(10**9)),
            to_user_name=CORP_ID,
            agent_id=AGENT_ID,
        )
        reply = watcher.expect(tag)
        sent_at = time.time()
        ok = await post_callback(client, params, body, results)
        results.ack_s.append(time.time() - sent_at)
        for _ in range(3):  # WeCom retries a failed callback (at most three more times, seconds apart)
            if ok:
                break
            results.callbacks_failed += 1
            await asyncio.sleep(1.0)  # WeCom's retry interval, not a wait for a condition
            ok = await post_callback(client, params, body, results)
        if rng.random() < args.retry_rate:
            results.retries_sent += 1
            await client.post("/wecom/callback", params=params, content=body)
        try:
            arrived = await asyncio.wait_for(reply, args.reply_timeout)
        except TimeoutError:
            results.lost += 1
            continue
        results.e2e_s.append(arrived - sent_at)
        if args.think_time:
            await asyncio.sleep(rng.uniform(0, 2 * args.think_time))


async def run(args: argparse.Namespace) -> Results:
    wecom = FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET)
    llm = FakeLLM(latency_s=args.llm_latency)
    await wecom.start()
    await llm.start()
    env = {
        "WECOM_CORP_ID": CORP_ID,
        "WECOM_AGENT_ID": AGENT_ID,
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": TOKEN,
        "WECOM_ENCODING_AES_KEY": AES_KEY,
        "WECOM_API_BASE": wecom.base_url,
        "LLM_BASE_URL": f"{llm.base_url}/v1",
        "SAFETY_RATE_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
    }
    replicas = dict(item.split("=") for item in args.replicas) if args.replicas else {}
    results = Results(args.users, args.users * args.messages, args.llm_latency, args.retry_rate)
    crypto = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)
    watcher = ReplyWatcher(wecom)
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="wxbot-bench-") as run_dir:
        config = StackConfig(
            run_dir=Path(run_dir),
            ports="free",
            extra_env=env,
            replicas={k: int(v) for k, v in replicas.items()},
        )
        async with Stack(config) as stack:
            limits = httpx.Limits(max_connections=args.users, max_keepalive_connections=args.users)
            async with httpx.AsyncClient(base_url=stack.gateway_url, limits=limits, timeout=30) as client:
                watch = asyncio.create_task(watcher.run(stop))
                rng = random.Random(42)
                started = time.time()
                await asyncio.gather(
                    *(one_user(n, args, client, crypto, watcher, results, rng) for n in range(args.users))
                )
                results.wall_s = time.time() - started
                # Let late duplicates show: wait until no new message arrived for a quiet period.
                last = len(wecom.messages)
                quiet_since = time.monotonic()
                while time.monotonic() - quiet_since < args.quiet:
                    await asyncio.sleep(0.1)
                    if len(wecom.messages) != last:
                        last, quiet_since = len(wecom.messages), time.monotonic()
                stop.set()
                await watch
    await llm.stop()
    await wecom.stop()
    results.replies = sum(1 for tag in watcher.waiting if watcher.counts[tag] >= 1)
    results.duplicated = sum(c - 1 for c in watcher.counts.values() if c > 1)
    results.llm_max_in_flight = llm.max_in_flight
    if replicas:
        results.replicas = ", ".join(f"{k}×{v}" for k, v in replicas.items()) + ", others ×1"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--users", type=int, default=200, help="simulated users talking at once")
    parser.add_argument("--messages", type=int, default=5, help="messages per user")
    parser.add_argument("--llm-latency", type=float, default=1.0, help="fake LLM answer time, seconds")
    parser.add_argument("--retry-rate", type=float, default=0.1, help="share of callbacks WeCom delivers twice")
    parser.add_argument("--think-time", type=float, default=0.0, help="mean pause between a reply and the next message")
    parser.add_argument("--reply-timeout", type=float, default=60.0, help="a reply later than this counts as lost")
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds without messages before counting duplicates")
    parser.add_argument("--replicas", nargs="*", help="service=count, e.g. nlp=2 safety=2")
    args = parser.parse_args(argv)
    print(uvloop.run(run(args)).render())
