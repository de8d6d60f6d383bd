"""nlp's batched history lookups against a context of the previous release (no `GetHistories`, as
during a rolling upgrade): every lookup is still answered, one call each, and the batch is not
tried again. Real gRPC on loopback; the servicer is that release's interface, served by grpc.aio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from wxbot_nlp.history_batch import BatchedHistory
from wxbot_proto.context.v1 import context_pb2 as pb
from wxbot_proto.context.v1 import context_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(30)


class PreviousContext(pb_grpc.ContextServiceServicer):
    """GetHistory only: `GetHistories` answers UNIMPLEMENTED, as a server without the method does."""

    def __init__(self) -> None:
        self.batches = 0
        self.lookups: list[str] = []

    async def GetHistory(  # noqa: N802 (gRPC method name)
        self, request: pb.GetHistoryRequest, context: grpc.aio.ServicerContext[pb.GetHistoryRequest, object]
    ) -> pb.GetHistoryResponse:
        if not request.conversation_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required")
        self.lookups.append(request.conversation_id)
        return pb.GetHistoryResponse(turns=[pb.Turn(role=pb.ROLE_USER, text=f"hi from {request.conversation_id}")])

    async def GetHistories(  # noqa: N802 (gRPC method name)
        self, request: pb.GetHistoriesRequest, context: grpc.aio.ServicerContext[pb.GetHistoriesRequest, object]
    ) -> pb.GetHistoriesResponse:
        self.batches += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        raise AssertionError("abort raises")

    async def ResetConversation(  # noqa: N802 (gRPC method name)
        self,
        request: pb.ResetConversationRequest,
        context: grpc.aio.ServicerContext[pb.ResetConversationRequest, object],
    ) -> pb.ResetConversationResponse:
        return pb.ResetConversationResponse()


@pytest.fixture
async def served() -> AsyncIterator[tuple[PreviousContext, BatchedHistory]]:
    server = grpc.aio.server()
    servicer = PreviousContext()
    pb_grpc.add_ContextServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, BatchedHistory(pb_grpc.ContextServiceStub(channel))
    await channel.close(grace=None)
    await server.stop(grace=None)


def ask(history: BatchedHistory, conversation_id: str) -> asyncio.Task[pb.GetHistoryResponse]:
    return asyncio.ensure_future(
        history.GetHistory(pb.GetHistoryRequest(conversation_id=conversation_id), timeout=5, metadata=())
    )


async def test_lookups_are_answered_one_by_one_by_a_context_without_batches(
    served: tuple[PreviousContext, BatchedHistory],
) -> None:
    servicer, history = served
    first = await asyncio.gather(*(ask(history, f"c{i}") for i in range(6)))
    assert [r.turns[0].text for r in first] == [f"hi from c{i}" for i in range(6)]
    later = await asyncio.gather(*(ask(history, f"d{i}") for i in range(6)))
    assert [r.turns[0].text for r in later] == [f"hi from d{i}" for i in range(6)]
    assert servicer.batches == 1  # tried once, then known to be missing
    assert sorted(servicer.lookups) == sorted([f"c{i}" for i in range(6)] + [f"d{i}" for i in range(6)])


async def test_each_caller_gets_its_own_error_and_a_caller_that_gave_up_costs_nothing(
    served: tuple[PreviousContext, BatchedHistory],
) -> None:
    servicer, history = served
    good, bad, gone = ask(history, "good"), ask(history, ""), ask(history, "gone")
    gone.cancel()  # its handler stopped before the lookup went out
    assert (await good).turns[0].text == "hi from good"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bad
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert servicer.lookups == ["good"]
