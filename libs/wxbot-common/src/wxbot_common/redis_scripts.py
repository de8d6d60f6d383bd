"""Lua script calls made in the same event-loop turn go to Redis as one pipeline.

Under load a service runs many handlers per loop turn, and each that calls a script (the reply
outbox's enter / leave, the rate counter, the answer cache) took a pooled connection of its own:
one write, one Redis wake-up and one read per call. Gathered, the calls of a turn cost one of
each — the same lesson as the NATS flusher's (`nats/connection.py`): on this kind of host a
syscall that wakes another process costs about as much as a handler's Python work.

What a caller sees is what `redis.register_script(...)(keys=, args=)` gives: the script's
result, or the exception of its own call (another call's error in the same pipeline is not
its business). A script unknown to Redis (restarted, flushed) is loaded and the call retried
alone, as redis-py's `AsyncScript` does. A lone call goes straight through `AsyncScript`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Key = str | bytes
Arg = str | int | float | bytes


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[Key]
    args: list[Arg]
    answer: asyncio.Future[Any]


class BatchedScripts:
    """`register_script(text)` as on the client, with same-turn calls sent as one pipeline."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def register_script(self, text: str) -> BatchedScript:
        return BatchedScript(self, self._redis.register_script(text))

    def call(self, script: AsyncScript, keys: Sequence[Key], args: Sequence[Arg]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        call = _Call(script, list(keys), list(args), loop.create_future())
        self._queue.append(call)
        if len(self._queue) == 1:
            loop.call_soon(self._flush)  # after the handlers that are ready in this turn had their say
        return call.answer

    def _flush(self) -> None:
        calls, self._queue = [c for c in self._queue if not c.answer.done()], []
        if calls:
            task = asyncio.get_running_loop().create_task(
                self._alone(calls[0]) if len(calls) == 1 else self._run(calls)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _alone(call: _Call) -> None:
        try:
            result = await call.script(keys=call.keys, args=call.args)
        except asyncio.CancelledError:
            call.answer.cancel()  # shutting down: the caller must not wait for an answer that never comes
            raise
        except Exception as exc:
            _settle(call, exc=exc)
        else:
            _settle(call, result)

    async def _run(self, calls: list[_Call]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for call in calls:
                call.answer.cancel()
            raise
        except Exception as exc:  # the connection failed: every call of the pipeline failed with it
            for call in calls:
                _settle(call, exc=exc)
            return
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):
                await self._alone(call)  # loads the script, then runs the call
            elif isinstance(result, Exception):
                _settle(call, exc=result)
            else:
                _settle(call, result)


class BatchedScript:
    """One registered script; `await script(keys=[...], args=[...])`."""

    def __init__(self, batch: BatchedScripts, script: AsyncScript) -> None:
        self._batch = batch
        self._script = script

    async def __call__(self, keys: Sequence[Key] = (), args: Sequence[Arg] = ()) -> Any:
        return await self._batch.call(self._script, keys, args)


def _settle(call: _Call, result: Any = None, exc: BaseException | None = None) -> None:
    if call.answer.done():  # the caller gave up (cancelled)
        return
    if exc is not None:
        call.answer.set_exception(exc)
    else:
        call.answer.set_result(result)
