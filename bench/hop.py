"""The latency floor of one NATS hop on this machine, without any of wxbot's code around it.

`python -m bench.hop` starts a nats-server with JetStream and a consumer in a process of its own
(both on uvloop, as the services are), then publishes one message every `--gap-ms` (default: 20
ms apart, as at 50 messages/s, then 2 ms apart) and prints how long each took from `publish` to
the consumer's callback (wall clock, same machine), three ways: core NATS, a JetStream publish to
a push subscription, and a JetStream publish to a pull request kept open (how wxbot's consume
loop reads). What a hop of the pipeline costs beyond this is wxbot's own (decode, span, handler).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import uvloop
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from wxbot_devkit.launch import NatsServer

STREAM = "HOP"
MODES = ("core", "push", "pull")


async def consume(url: str, mode: str, count: int) -> None:
    """The consumer process: prints one JSON list of latencies (µs) when `count` messages came."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    got: list[float] = []
    done = asyncio.Event()

    def record(data: bytes) -> None:
        got.append((time.time_ns() - int(data)) / 1000)
        if len(got) >= count:
            done.set()

    async def on_core(msg: Msg) -> None:
        record(msg.data)

    async def on_js(msg: Msg) -> None:
        record(msg.data)
        await msg.ack()

    subject = f"hop.{mode}"
    if mode == "core":
        await nc.subscribe(subject, cb=on_core)
    elif mode == "push":
        await js.subscribe(subject, stream=STREAM, durable="push", cb=on_js, manual_ack=True)
    else:
        config = ConsumerConfig(durable_name="pull", ack_policy=AckPolicy.EXPLICIT, filter_subject=subject)
        await js.add_consumer(STREAM, config)
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_js)
        request = {"batch": count + 10, "expires": 120 * 1_000_000_000}
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.pull", json.dumps(request).encode(), reply=inbox)
    await nc.flush()
    print("ready", flush=True)
    await done.wait()
    print(json.dumps(got), flush=True)
    await nc.drain()


async def measure(url: str, mode: str, count: int, gap_s: float) -> list[float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.hop",
        "--consume",
        url,
        "--mode",
        mode,
        "--count",
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
    nc = await nats.connect(url)
    js = nc.jetstream()
    for _ in range(count):
        payload = str(time.time_ns()).encode()
        if mode == "core":
            await nc.publish(f"hop.{mode}", payload)
            await nc.flush()
        else:
            await js.publish(f"hop.{mode}", payload, stream=STREAM)
        await asyncio.sleep(gap_s)  # the pace of the probe, not a wait for a condition
    line = await asyncio.wait_for(child.stdout.readline(), 30)
    await child.wait()
    await nc.close()
    return [float(v) for v in json.loads(line)]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wxbot-hop-") as tmp:
        server = NatsServer(Path(tmp))
        await server.start()
        try:
            nc = await nats.connect(server.url)
            await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["hop.>"]))
            await nc.close()
            for gap_ms in args.gap_ms or (20.0, 2.0):
                print(f"one hop, publish → consumer callback, {args.count} messages {gap_ms:g} ms apart (µs)")
                for mode in MODES:
                    got = sorted(await measure(server.url, mode, args.count, gap_ms / 1000))
                    p50, p90 = statistics.median(got), got[int(len(got) * 0.9)]
                    print(f"  {mode:<5} p50 {p50:7.0f}   p90 {p90:7.0f}   max {got[-1]:7.0f}", flush=True)
        finally:
            await server.stop()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--gap-ms", type=float, action="append", help="pause between messages, repeatable (default: 20, then 2)"
    )
    parser.add_argument("--consume", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="core", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.consume:
        uvloop.run(consume(args.consume, args.mode, args.count))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
