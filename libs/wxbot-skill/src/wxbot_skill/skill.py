"""A skill process: a NATS micro service with one endpoint per tool (docs/skills.md).

    skill = Skill("convert", "1.0.0")

    @skill.tool
    async def celsius(fahrenheit: float) -> float:
        \"\"\"Convert a temperature from Fahrenheit to Celsius.\"\"\"
        return (fahrenheit - 32) * 5 / 9

    skill.run()  # NATS_URL, OTEL_* and LOG_* from the environment, until SIGTERM/SIGINT

A parameter typed `CallContext` receives who is asking (left out of the schema).

Each request runs as its own task (nats.micro awaits a handler before the next message, so one
slow call would hold up every other), at most `max_concurrency` at once. Each is a SERVER span
under the caller's trace context. Arguments that break the schema are answered with error 400;
`SkillError` with 500 and its message; any other exception with 500 and no detail (it is logged
here: exception text may hold what the caller should not see).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import overload

import nats.errors
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from wxbot_common.logs import configure_logging, get_logger
from wxbot_common.nats.connection import connect_nats
from wxbot_common.nats.propagation import extract_context
from wxbot_common.settings import CommonSettings
from wxbot_common.skill_contract import CODE_BAD_ARGUMENTS, CODE_FAILED, CallContext, tool_span_name
from wxbot_common.telemetry import setup_telemetry
from wxbot_skill.tools import FunctionTool, NoCallerError, ToolFn, function_tool


class SkillError(Exception):
    """Raise it to say plainly why the tool could not do it; the message goes to the model."""


class Skill:
    def __init__(self, name: str, version: str = "0.1.0", description: str = "", max_concurrency: int = 64) -> None:
        self.name = name
        self.version = version
        self.description = description
        self.tools: list[FunctionTool] = []
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger(f"wxbot.skill.{name}")

    @overload
    def tool(self, fn: ToolFn) -> ToolFn: ...

    @overload
    def tool(self, *, name: str | None = None, command: str | None = None) -> Callable[[ToolFn], ToolFn]: ...

    def tool(
        self, fn: ToolFn | None = None, *, name: str | None = None, command: str | None = None
    ) -> ToolFn | Callable[[ToolFn], ToolFn]:
        """Make an async function a tool (`@skill.tool`, or `@skill.tool(command="/weather")` to let
        users call it directly: the text after the command goes to its first string parameter)."""

        def register(f: ToolFn) -> ToolFn:
            self.tools.append(function_tool(f, name, command))
            return f

        return register(fn) if fn is not None else register

    # -- serving --------------------------------------------------------------------------------

    async def start(self, nc: Client) -> Service:
        """Register the service and its endpoints on `nc`; stop it with `await service.stop()`."""
        if not self.tools:
            raise ValueError(f"skill {self.name!r} has no tools")
        service = await add_service(nc, name=self.name, version=self.version, description=self.description)
        for tool in self.tools:
            await service.add_endpoint(name=tool.name, handler=self._handler(tool), metadata=tool.metadata())
        return service

    async def drain(self, grace_s: float = 10.0) -> None:
        """Let the calls in flight finish (up to `grace_s`, then cancel them), after the service
        stopped taking new ones."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, configured by the environment (NATS_URL, OTEL_*, LOG_*)."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        settings = CommonSettings()
        configure_logging(self.name, settings.log_level, settings.log_format)
        telemetry = setup_telemetry(self.name)
        nc = await connect_nats(settings, f"skill-{self.name}")
        service = await self.start(nc)
        self._log.info("skill_ready", tools=[t.name for t in self.tools], version=self.version)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await service.stop()
        await self.drain(settings.shutdown_grace_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout=5)
        telemetry.shutdown()

    def _handler(self, tool: FunctionTool) -> Callable[[Request], Awaitable[None]]:
        async def handle(request: Request) -> None:  # returns at once: the call goes on in its own task
            task = asyncio.create_task(self._answer(tool, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _answer(self, tool: FunctionTool, request: Request) -> None:
        tracer = trace.get_tracer("wxbot.skill")
        async with self._slots:
            with tracer.start_as_current_span(
                tool_span_name(tool.name),
                context=extract_context(request.headers),
                kind=SpanKind.SERVER,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool.name,
                    "wxbot.skill.service": self.name,
                    "wxbot.skill.version": self.version,
                },
            ) as span:
                try:
                    await self._reply(tool, request)
                except (nats.errors.Error, OSError) as exc:  # the caller or the connection is gone
                    span.set_status(StatusCode.ERROR, type(exc).__name__)
                    self._log.warning("reply_failed", tool=tool.name, error=repr(exc))

    async def _reply(self, tool: FunctionTool, request: Request) -> None:
        span = trace.get_current_span()
        try:
            body = await tool.invoke(request.data, CallContext.from_headers(request.headers))
        except NoCallerError as exc:
            span.set_status(StatusCode.ERROR, "no caller")
            await request.respond_error(CODE_BAD_ARGUMENTS, str(exc))
            return
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
            span.set_status(StatusCode.ERROR, "invalid arguments")
            await request.respond_error(CODE_BAD_ARGUMENTS, f"invalid arguments: {problems}"[:1000])
            return
        except SkillError as exc:
            span.set_status(StatusCode.ERROR, "skill error")
            await request.respond_error(CODE_FAILED, str(exc)[:1000] or "the skill failed")
            return
        except Exception:
            span.set_status(StatusCode.ERROR, "unexpected error")
            self._log.exception("tool_failed", tool=tool.name)
            await request.respond_error(CODE_FAILED, "the skill failed unexpectedly")
            return
        try:
            await request.respond(body)
        except nats.errors.MaxPayloadError:
            span.set_status(StatusCode.ERROR, "result too large")
            await request.respond_error(CODE_FAILED, f"the result ({len(body)} bytes) is larger than NATS allows")
