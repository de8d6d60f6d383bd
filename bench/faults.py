"""The faults of the chaos run: what each one does to the stack or to a fake, and when it is over.

A crash is a SIGKILL (nothing is flushed, nothing handed back): of one replica of a service (for
context, the replica holding the projection lease), of nats-server or of redis-server; the
supervisor restarts it with its data. `redis-loss` is a SIGKILL of redis-server that also loses
the last second of its writes, as a crash of the machine can under `appendfsync everysec` (a
SIGKILL alone loses nothing Redis acknowledged: the append-only file is in the page cache): the
file is cut back to its size of a second before, before the supervisor restarts Redis. An outage
of the WeCom API closes the fake's listening socket (connection refused) for a while; a rate-limit
storm answers every LLM call 429 with Retry-After for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.chaos_report import FaultMark
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.system import Stack

SERVICE_FAULTS = ("gateway", "safety", "nlp", "context")
FAULTS = (*SERVICE_FAULTS, "nats", "redis", "redis-loss", "wecom", "llm")
LEADER = re.compile(r"^wxbot_context_projection_leader (\S+)$", re.M)
RESTART_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class FaultSettings:
    wecom_outage_s: float = 30.0
    llm_storm_s: float = 10.0
    retry_after_s: float = 2.0
    redis_loss_s: float = 1.0


class AofHistory:
    """The size of Redis's append-only file, sampled, so that a crash can be made to lose the writes
    of its last second (cut the file back to an earlier size)."""

    def __init__(self, data_dir: Path, every_s: float = 0.05, keep_s: float = 10.0) -> None:
        self.data_dir = data_dir
        self.every_s = every_s
        self.keep_s = keep_s
        self.samples: deque[tuple[float, int]] = deque()  # (monotonic, size)

    def path(self) -> Path:
        """Redis 6 writes one file; Redis 7 a directory whose latest `.incr.aof` takes new writes."""
        single = self.data_dir / "appendonly.aof"
        if single.exists():
            return single
        parts = sorted((self.data_dir / "appendonlydir").glob("*.incr.aof"))
        if not parts:
            raise FileNotFoundError(f"no append-only file in {self.data_dir} (is Redis persisting?)")
        return parts[-1]

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                now = time.monotonic()
                self.samples.append((now, self.path().stat().st_size))
                while self.samples and self.samples[0][0] < now - self.keep_s:
                    self.samples.popleft()
            await asyncio.sleep(self.every_s)  # the sampling period, not a wait for a condition

    def size_at(self, when: float) -> int:
        earlier = [size for at, size in self.samples if at <= when]
        if not earlier:
            raise RuntimeError("no sample of the append-only file that old yet")
        return earlier[-1]


class Injector:
    """Injects one fault at a time into a supervised stack and its fakes."""

    def __init__(self, stack: Stack, wecom: FakeWeCom, llm: FakeLLM, settings: FaultSettings) -> None:
        self.stack = stack
        self.wecom = wecom
        self.llm = llm
        self.settings = settings
        self.aof = AofHistory(stack.redis.data_dir)
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling the append-only file (for `redis-loss`)."""
        self._sampler = asyncio.create_task(self.aof.run(), name="aof-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)

    async def context_leader(self, timeout_s: float = 15.0) -> str:
        """The context replica whose /metrics says it holds the projection lease (polled: while the
        lease moves, for a moment no replica says so)."""
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=5.0) as client:
            while time.monotonic() < deadline:
                for replica in self.stack.replicas:
                    if replica.service != "context":
                        continue
                    try:
                        text = (await client.get(f"http://127.0.0.1:{replica.http_port}/metrics")).text
                    except httpx.HTTPError as exc:
                        seen[replica.child.name] = type(exc).__name__
                        continue
                    m = LEADER.search(text)
                    seen[replica.child.name] = m[1] if m else "no gauge"
                    if m and float(m[1]) == 1.0:
                        return replica.child.name
                await asyncio.sleep(0.2)
        raise RuntimeError(f"no context replica holds the projection lease: {seen}")

    async def victim(self, fault: str) -> str:
        if fault == "context":
            return await self.context_leader()
        if fault in ("nats", "redis"):
            return fault
        names = [r.child.name for r in self.stack.replicas if r.service == fault]
        return names[0]

    async def run(self, fault: str) -> FaultMark:
        """Inject `fault` and wait (with a deadline) until it is over: the killed process ready
        again, the outage or storm ended. The mark's times are on time.perf_counter's clock."""
        if fault == "wecom":
            return await self._wecom_outage()
        if fault == "llm":
            return await self._llm_storm()
        if fault == "redis-loss":
            return await self._redis_loss()
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        return await self._kill(await self.victim(fault))

    async def _kill(self, name: str) -> FaultMark:
        supervisor = self.stack.supervisor
        before = supervisor.restarts(name)
        injected_at = time.perf_counter()
        pid = self.stack.kill(name)
        restart = await supervisor.wait_running(name, restarts=before + 1, timeout_s=RESTART_TIMEOUT_S)
        downtime = restart.downtime_s
        return FaultMark(
            f"SIGKILL {name}",
            injected_at,
            time.perf_counter(),
            f"pid {pid} {restart.reason}; ready again (pid {self.stack.processes()[name].child.pid}) after "
            f"{downtime:.1f} s"
            if downtime is not None
            else f"pid {pid} {restart.reason}",
            downtime,
        )

    async def _redis_loss(self) -> FaultMark:
        """SIGKILL redis-server, and cut its append-only file back to its size `redis_loss_s` ago
        while the supervisor waits out its back-off (0.5 s) before the restart."""
        supervisor, name = self.stack.supervisor, "redis"
        before = supervisor.restarts(name)
        injected_at = time.perf_counter()
        cut = self.aof.size_at(time.monotonic() - self.settings.redis_loss_s)
        pid = self.stack.kill(name)
        await wait_until(lambda: supervisor.restarts(name) > before, 5, "the supervisor to see redis die")
        if supervisor.phase(name) != "backoff":
            raise RuntimeError("redis restarted before its append-only file could be cut")
        path = self.aof.path()
        size = path.stat().st_size
        os.truncate(path, min(cut, size))
        restart = await supervisor.wait_running(name, restarts=before + 1, timeout_s=RESTART_TIMEOUT_S)
        lost = size - min(cut, size)
        return FaultMark(
            f"SIGKILL redis, {self.settings.redis_loss_s:g} s lost",
            injected_at,
            time.perf_counter(),
            f"pid {pid} killed; its append-only file cut back by {lost} bytes (the writes of its last "
            f"{self.settings.redis_loss_s:g} s, as a crash of the machine under appendfsync everysec loses); "
            f"ready again after {restart.downtime_s or 0:.1f} s",
            restart.downtime_s,
        )

    async def _wecom_outage(self) -> FaultMark:
        seconds = self.settings.wecom_outage_s
        injected_at = time.perf_counter()
        await self.wecom.refuse_connections(seconds)
        await wait_until(lambda: not self.wecom.offline, seconds + 30, "the WeCom API to listen again")
        return FaultMark(
            f"WeCom refuses {seconds:g} s",
            injected_at,
            time.perf_counter(),
            f"the fake WeCom API closed its socket (connection refused) for {seconds:g} s",
        )

    async def _llm_storm(self) -> FaultMark:
        s = self.settings
        calls = self.llm.rate_limited
        injected_at = time.perf_counter()
        self.llm.rate_limit_for(s.llm_storm_s, s.retry_after_s)
        await wait_until(
            lambda: time.perf_counter() >= injected_at + s.llm_storm_s, s.llm_storm_s + 30, "the 429 storm to end"
        )
        return FaultMark(
            f"LLM 429 × {s.llm_storm_s:g} s",
            injected_at,
            time.perf_counter(),
            f"every LLM call answered 429 with Retry-After {s.retry_after_s:g} s for {s.llm_storm_s:g} s "
            f"({self.llm.rate_limited - calls} calls)",
        )
