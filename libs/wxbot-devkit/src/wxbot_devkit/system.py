"""The whole wxbot on one machine: NATS, Redis, topology, the six services as separate processes
(and the web console, with `StackConfig(console=True)` as `make run`).

`Stack` is used by `make run` (through `main`), by the end-to-end tests and by the benchmark;
with `StackConfig(supervise=True)` (as `make run`) a process that dies is restarted, and
`kill()` plus `supervisor` let a test cause such a death and wait for the recovery.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self, TextIO
from urllib.parse import urlsplit

from wxbot_devkit.launch import Child, NatsServer, RedisServer, free_port, port_is_free
from wxbot_devkit.supervisor import Backoff, Supervisable, Supervisor

# Start order: context serves the others; analytics (a read model of the log) comes last.
SERVICES = ("context", "safety", "nlp", "gateway", "skills", "analytics")
OPTIONAL = ("skills", "analytics")  # off a reply's path: `replicas={"analytics": 0}` leaves one out
DEFAULT_PORTS = {
    "gateway": 8080,
    "safety": 8081,
    "nlp": 8082,
    "context": 8083,
    "skills": 8084,
    "analytics": 8085,
    "console": 8090,
    "grpc": 50051,
    "nats": 4222,
    "redis": 6379,
}
HTTP_PORT_VAR = {
    "gateway": "GATEWAY_PORT",
    "safety": "SAFETY_HTTP_PORT",
    "nlp": "NLP_HTTP_PORT",
    "context": "CONTEXT_HTTP_PORT",
    "skills": "SKILLS_HTTP_PORT",
    "analytics": "ANALYTICS_PORT",
    "console": "CONSOLE_PORT",
}


@dataclass
class StackConfig:
    run_dir: Path
    ports: Literal["default", "free"] = "free"
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    # Reply delivery in processes of its own (GATEWAY_ROLE=delivery; the gateway replicas then only
    # take callbacks); 0 = every gateway replica does both.
    gateway_delivery: int = 0
    persist: bool = False  # keep Redis data across restarts (NATS always keeps its file store)
    echo: TextIO | None = None  # where prefixed child output goes (tests: nowhere, but captured)
    ready_timeout_s: float = 60.0
    supervise: bool = False  # restart any process that dies, with backoff (`make run`, chaos tests)
    backoff: Backoff = field(default_factory=Backoff)
    # The web console too (last; it reads the others' /readyz and /metrics and uses the gateway's
    # bridge, whose token is made up here when GATEWAY_BRIDGE_TOKEN is unset).
    console: bool = False
    # CPU_NICE of every process but the gateways that answer WeCom's callbacks, unless CPU_NICE is
    # set: on a busy box the callback's answer runs first (wxbot_common.cpu_priority); 0 = all equal.
    # 19 rather than 10: at full load the callback's ack p99 came out lower in 6 of 7 pairs, replies/s
    # unchanged (docs/performance.md, sixteenth session); the work behind waits in JetStream, durably.
    backend_nice: int = 19


@dataclass
class Replica:
    service: str
    index: int
    child: Child
    http_port: int
    ready_timeout_s: float = 60.0
    role: str = "all"  # the gateway's GATEWAY_ROLE

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/readyz"

    async def start(self) -> None:
        """Spawn the process (again) and wait until it reports ready."""
        await self.child.start()
        await self.child.wait_http_ok(self.ready_url, self.ready_timeout_s)


class Stack:
    """Starts everything in order and stops it in reverse; an async context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.env = {**os.environ, **config.extra_env}
        self.notes: list[str] = []
        nats_host, nats_port = self._address("nats", "NATS_URL", "NATS_PORT")
        self.nats = NatsServer(config.run_dir / "nats", nats_port, echo=config.echo, host=nats_host)
        redis_host, redis_port = self._address("redis", "REDIS_URL", "REDIS_PORT")
        self.redis = RedisServer(
            config.run_dir / "redis", redis_port, persist=config.persist, echo=config.echo, host=redis_host
        )
        self.replicas: list[Replica] = []
        self.grpc_ports: list[int] = []
        self._supervisor: Supervisor | None = None

    def _address(self, name: str, url_var: str, port_var: str) -> tuple[str, int]:
        """Where the embedded server listens. With default ports (`make run`) a NATS_URL / REDIS_URL
        the user set is honoured — its host and port, so that what the settings say is where the
        server is, and third-party skills or tools given that URL find it; a busy port is an error
        then, not silently another one."""
        url = self.env.get(url_var, "")
        if self.config.ports != "default" or not url or self.env.get(port_var):
            return "127.0.0.1", self._port(name, port_var)
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        host = "127.0.0.1" if host == "localhost" else host
        port = parts.port or DEFAULT_PORTS[name]
        try:
            free = port_is_free(port, host)
        except ValueError as exc:
            raise RuntimeError(
                f"{url_var}={url}: {exc}; the embedded {name} listens there: unset {url_var} or point it here"
            ) from exc
        if not free:
            raise RuntimeError(f"{url_var}={url}: port {port} on {host} is busy; free it or change {url_var}")
        return host, port

    def _port(self, name: str, var: str | None = None) -> int:
        if var and self.env.get(var):
            return int(self.env[var])
        if self.config.ports == "free":
            return free_port()
        wanted = DEFAULT_PORTS[name]
        if port_is_free(wanted):
            return wanted
        chosen = free_port()
        self.notes.append(f"port {wanted} ({name}) is busy: using {chosen}")
        return chosen

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls[0]

    @property
    def gateway_urls(self) -> list[str]:
        host = self.env.get("GATEWAY_HOST", "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return [
            f"http://{host}:{r.http_port}" for r in self.replicas if r.service == "gateway" and r.role != "delivery"
        ]

    def service_urls(self) -> dict[str, list[str]]:
        urls: dict[str, list[str]] = {}
        for r in self.replicas:
            urls.setdefault(r.service, []).append(f"http://127.0.0.1:{r.http_port}")
        return urls

    def logs(self, service: str) -> list[str]:
        return [line for r in self.replicas if r.service == service for line in r.child.lines]

    def processes(self) -> dict[str, Supervisable]:
        """Every process by name: `nats`, `redis`, and each replica (`nlp`, or `nlp-1`, `nlp-2`…)."""
        return {"nats": self.nats, "redis": self.redis, **{r.child.name: r for r in self.replicas}}

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send `sig` to the process `name` (see `processes`), as a crash or an operator would; its pid."""
        processes = self.processes()
        if name not in processes:
            raise KeyError(f"no process {name!r}; there are {', '.join(processes)}")
        pid = processes[name].child.pid
        if pid is None or processes[name].child.returncode is not None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, sig)
        return pid

    @property
    def supervisor(self) -> Supervisor:
        """Restart counts and history (`StackConfig(supervise=True)`)."""
        if self._supervisor is None:
            raise RuntimeError("this stack is not supervised: StackConfig(supervise=True)")
        return self._supervisor

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self.nats.start(), self.redis.start())
        base = {**self.env, "NATS_URL": self.nats.url, "REDIS_URL": self.redis.url}
        await self._ensure_topology(base)
        services = (*SERVICES, "console") if self.config.console else SERVICES
        if self.config.console and not base.get("GATEWAY_BRIDGE_TOKEN"):
            base["GATEWAY_BRIDGE_TOKEN"] = secrets.token_urlsafe(24)
        count = {s: max(0 if s in OPTIONAL else 1, self.config.replicas.get(s, 1)) for s in SERVICES}
        if self.config.console:
            count["console"] = 1
        self.grpc_ports = [
            self._port("grpc", "CONTEXT_GRPC_PORT") if i == 0 else free_port() for i in range(count["context"])
        ]
        grpc_target = (
            f"127.0.0.1:{self.grpc_ports[0]}"
            if len(self.grpc_ports) == 1
            else "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in self.grpc_ports)
        )
        base["CONTEXT_GRPC_ADDR"] = grpc_target
        colour = 0
        for service in services:
            roles = ["all"] * count[service]
            if service == "gateway" and self.config.gateway_delivery > 0:
                roles = ["ingress"] * count[service] + ["delivery"] * self.config.gateway_delivery
            for i, role in enumerate(roles):
                port = self._port(service, HTTP_PORT_VAR[service]) if i == 0 else free_port()
                env = {**base, HTTP_PORT_VAR[service]: str(port), "OTEL_SERVICE_NAME": service}
                name = service if len(roles) == 1 else f"{service}-{i + 1}"
                if (service != "gateway" or role == "delivery") and "CPU_NICE" not in self.env:
                    env["CPU_NICE"] = str(self.config.backend_nice)
                if role != "all":
                    env["GATEWAY_ROLE"] = role
                    name = f"gateway-{role}-{i + 1 if role == 'ingress' else i + 1 - count[service]}"
                if service == "console":
                    env.update(self._console_env(port))
                if service == "context":
                    env["CONTEXT_GRPC_LISTEN"] = f"127.0.0.1:{self.grpc_ports[i]}"
                    env["CONTEXT_REPLICA_ID"] = name  # unique per replica; a restarted one takes its lease back
                child = Child(
                    name,
                    [sys.executable, "-m", f"wxbot_{service}"],
                    env=env,
                    cwd=self.config.run_dir,
                    echo=self.config.echo,
                    colour=colour,
                )
                colour += 1
                self.replicas.append(Replica(service, i, child, port, self.config.ready_timeout_s, role))
        first, rest = self.replicas[: count["context"]], self.replicas[count["context"] :]
        await self._start_replicas(first)
        await self._start_replicas(rest)
        if self.config.supervise:
            self._supervisor = Supervisor(list(self.processes().values()), self.config.backoff, self.config.echo)
            self._supervisor.start()

    def _console_env(self, port: int) -> dict[str, str]:
        """Where the console finds the services it watches and the gateway it chats through."""
        urls = [f"{r.child.name}=http://127.0.0.1:{r.http_port}" for r in self.replicas]
        env = {"CONSOLE_SERVICES": ",".join(urls), "GATEWAY_URL": self.gateway_url}
        analytics = [r for r in self.replicas if r.service == "analytics"]
        if analytics and not self.env.get("ANALYTICS_URL"):  # the dashboard draws its report
            env["ANALYTICS_URL"] = f"http://127.0.0.1:{analytics[0].http_port}"
        if not self.env.get("CONSOLE_PUBLIC_URL"):
            host = self.env.get("CONSOLE_HOST", "127.0.0.1")
            env["CONSOLE_PUBLIC_URL"] = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        return env

    @property
    def console_url(self) -> str | None:
        """The console's address (None when the stack runs without it)."""
        found = [r for r in self.replicas if r.service == "console"]
        if not found:
            return None
        return self.env.get("CONSOLE_PUBLIC_URL") or f"http://127.0.0.1:{found[0].http_port}"

    async def _start_replicas(self, replicas: list[Replica]) -> None:
        for r in replicas:
            await r.child.start()
        await asyncio.gather(*(r.child.wait_http_ok(r.ready_url, self.config.ready_timeout_s) for r in replicas))

    async def _ensure_topology(self, env: dict[str, str]) -> None:
        child = Child(
            "topology",
            [sys.executable, "-m", "wxbot_common.nats.topology", "ensure"],
            env=env,
            cwd=self.config.run_dir,
            echo=self.config.echo,
        )
        await child.start()
        try:
            code = await child.wait(timeout_s=60.0)
        finally:
            await child.stop(grace_s=1.0)
        if code != 0:
            raise RuntimeError(f"topology ensure failed ({code}):\n{child.tail()}")

    async def stop(self) -> None:
        if self._supervisor is not None:  # first, so that nothing stopped below is started again
            await self._supervisor.stop()
        await asyncio.gather(*(r.child.stop() for r in reversed(self.replicas) if r.service != "context"))
        await asyncio.gather(*(r.child.stop() for r in self.replicas if r.service == "context"))
        await asyncio.gather(self.redis.stop(), self.nats.stop())
