"""History lookups made at the same moment go to context as one `GetHistories` call.

A busy nlp replica asks context for history at the rate messages arrive, and several handlers
reach that point in the same event-loop turn (a fetch hands over a batch of messages). One call
for all of them costs both sides one gRPC call and one Redis round trip instead of one each: the
fixed cost of a call is most of what a history lookup costs. A lookup context would have to wait
for (its conversation's earlier message unanswered, the projection behind) comes back
`retry_alone` and is asked again with `GetHistory`, which waits — so a slow conversation never
holds up the others, and what callers see (the response, the error, the trace) is what a lone
`GetHistory` gives them. Against a context without `GetHistories` (a rolling upgrade), lookups
are asked one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from wxbot_proto.context.v1 import context_pb2 as ctx
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc


@dataclass(slots=True)
class _Lookup:
    request: ctx.GetHistoryRequest
    metadata: tuple[tuple[str, str], ...]
    deadline: float  # loop time
    answer: asyncio.Future[ctx.GetHistoryResponse]


class BatchedHistory:
    """`GetHistory(request, timeout=, metadata=)`, as on the stub, with same-moment calls batched."""

    def __init__(self, stub: ctx_grpc.ContextServiceAsyncStub, max_batch: int = 64) -> None:
        self._stub = stub
        self._max_batch = max_batch
        self._queue: list[_Lookup] = []
        self._batches = True  # False once context said it has no GetHistories
        self._tasks: set[asyncio.Task[None]] = set()

    async def GetHistory(  # noqa: N802 (the stub's method and parameters: a drop-in for it)
        self,
        request: ctx.GetHistoryRequest,
        *,
        timeout: float,  # noqa: ASYNC109
        metadata: Sequence[tuple[str, str]] = (),
    ) -> ctx.GetHistoryResponse:
        if not self._batches:
            return await self._stub.GetHistory(request, timeout=timeout, metadata=tuple(metadata))
        loop = asyncio.get_running_loop()
        lookup = _Lookup(request, tuple(metadata), loop.time() + timeout, loop.create_future())
        self._queue.append(lookup)
        if len(self._queue) == 1:
            loop.call_soon(self._flush)  # after the handlers that are ready in this turn had their say
        return await lookup.answer

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self._max_batch):
            chunk = [lookup for lookup in queue[start : start + self._max_batch] if not lookup.answer.done()]
            if len(chunk) == 1:
                self._spawn(self._alone(chunk[0]))
            elif chunk:
                self._spawn(self._batch(chunk))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batch(self, chunk: list[_Lookup]) -> None:
        loop = asyncio.get_running_loop()
        request = ctx.GetHistoriesRequest(
            lookups=[ctx.HistoryLookup(request=lookup.request, trace_context=dict(lookup.metadata)) for lookup in chunk]
        )
        try:
            response = await self._stub.GetHistories(
                request, timeout=max(0.001, min(lookup.deadline for lookup in chunk) - loop.time())
            )
            results = list(response.results)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._batches = False
            results = []
        except asyncio.CancelledError:
            for lookup in chunk:
                lookup.answer.cancel()
            raise
        for i, lookup in enumerate(chunk):
            if lookup.answer.done():
                continue  # its caller gave up
            if i < len(results) and results[i].HasField("history"):
                lookup.answer.set_result(results[i].history)
            else:
                self._spawn(self._alone(lookup))

    async def _alone(self, lookup: _Lookup) -> None:
        remaining = lookup.deadline - asyncio.get_running_loop().time()
        try:
            response = await self._stub.GetHistory(
                lookup.request, timeout=max(0.001, remaining), metadata=lookup.metadata
            )
        except asyncio.CancelledError:
            lookup.answer.cancel()
            raise
        except Exception as exc:  # handed to the caller, as a lone call would raise it
            if not lookup.answer.done():
                lookup.answer.set_exception(exc)
            return
        if not lookup.answer.done():
            lookup.answer.set_result(response)
