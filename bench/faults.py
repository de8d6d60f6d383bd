"""The faults of the chaos run: what each one does to the stack or to a fake, and when it is over.

A crash is a SIGKILL (nothing is flushed, nothing handed back): of one replica of a service (for
context, the replica holding the projection lease), of nats-server or of redis-server; the
supervisor restarts it with its data. An outage of the WeCom API closes the fake's listening
socket (connection refused) for a while; a rate-limit storm answers every LLM call 429 with
Retry-After for a while.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import httpx

from bench.chaos_report import FaultMark
from wxbot_devkit.fakes.llm import FakeLLM
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.system import Stack

SERVICE_FAULTS = ("gateway", "safety", "nlp", "context")
FAULTS = (*SERVICE_FAULTS, "nats", "redis", "wecom", "llm")
LEADER = re.compile(r"^wxbot_context_projection_leader (\S+)$", re.M)
RESTART_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class FaultSettings:
    wecom_outage_s: float = 30.0
    llm_storm_s: float = 10.0
    retry_after_s: float = 2.0


class Injector:
    """Injects one fault at a time into a supervised stack and its fakes."""

    def __init__(self, stack: Stack, wecom: FakeWeCom, llm: FakeLLM, settings: FaultSettings) -> None:
        self.stack = stack
        self.wecom = wecom
        self.llm = llm
        self.settings = settings

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
