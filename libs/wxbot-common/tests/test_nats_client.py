"""The NATS client's lean paths against a real nats-server: acked publishes and direct subscriptions
behave as nats-py's own (`js.publish`, queued callbacks), errors included, and survive a server restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from wxbot_common.nats.connection import CoalescingClient, connect_nats
from wxbot_common.settings import CommonSettings
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.launch import NatsServer, embedded_nats_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats")
    await nats_server.start()
    yield nats_server
    await nats_server.stop()


@pytest.fixture
async def client(server: NatsServer) -> AsyncIterator[CoalescingClient]:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = CoalescingClient()
    await nc.connect(server.url, error_cb=on_error, reconnect_time_wait=1, max_reconnect_attempts=-1)
    nc.errors = errors  # type: ignore[attr-defined]
    await nc.jetstream().add_stream(StreamConfig(name="T", subjects=["t.>"], duplicate_window=60.0))
    yield nc
    await nc.close()


async def test_concurrent_acked_publishes_each_get_their_own_ack(client: CoalescingClient) -> None:
    acks = await asyncio.gather(
        *(client.publish_acked(f"t.{i}", str(i).encode(), {"Nats-Msg-Id": f"m{i}"}, 5.0) for i in range(300))
    )
    assert sorted(ack.seq for ack in acks) == list(range(1, 301))
    js = client.jetstream()
    for i in (0, 137, 299):  # the ack a caller got names the sequence its own message was stored at
        stored = await js.get_msg("T", acks[i].seq)
        assert stored.data == str(i).encode()
    assert all(ack.stream == "T" and not ack.duplicate for ack in acks)


async def test_a_republished_message_id_is_acked_as_a_duplicate(client: CoalescingClient) -> None:
    first = await client.publish_acked("t.a", b"x", {"Nats-Msg-Id": "same"}, 5.0)
    again = await client.publish_acked("t.a", b"x", {"Nats-Msg-Id": "same"}, 5.0)
    assert (again.seq, again.duplicate) == (first.seq, True)


async def test_no_stream_and_a_silent_responder_fail_as_js_publish_does(client: CoalescingClient) -> None:
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await client.publish_acked("nostream.x", b"x", {}, 5.0)
    silent = await client.subscribe("quiet.x")  # someone listens, nobody answers
    with pytest.raises(nats.errors.TimeoutError):
        await client.publish_acked("quiet.x", b"x", {}, 0.2)
    await silent.unsubscribe()
    assert (await client.publish_acked("t.after", b"x", {}, 5.0)).seq == 1  # and the next one works


async def test_a_stream_error_is_an_api_error(client: CoalescingClient) -> None:
    with pytest.raises(nats.js.errors.APIError):  # wrong expected stream: the server refuses
        await client.publish_acked("t.a", b"x", {"Nats-Expected-Stream": "OTHER"}, 5.0)


async def test_a_direct_handler_gets_every_message_and_its_errors_spare_the_connection(
    client: CoalescingClient,
) -> None:
    got: list[Msg] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("handler bug")
        got.append(msg)

    await client.subscribe_direct("d.>", handler)
    await client.publish("d.1", b"one", headers={"K": "v"})
    await client.publish("d.2", b"boom")
    await client.publish("d.3", b"three", reply="r.1")
    await wait_until(lambda: len(got) == 2, 5, "two messages handled")
    assert [(m.subject, m.data, m.reply) for m in got] == [("d.1", b"one", ""), ("d.3", b"three", "r.1")]
    assert got[0].headers == {"K": "v"}
    assert any(isinstance(e, ValueError) for e in client.errors)  # type: ignore[attr-defined]
    assert client.is_connected


async def test_acked_publishes_work_again_after_the_server_restarts(
    client: CoalescingClient, server: NatsServer
) -> None:
    assert (await client.publish_acked("t.a", b"1", {}, 5.0)).seq == 1
    await server.stop()
    await server.start()
    await wait_until(lambda: client.is_connected, 20, "reconnected")
    ack = await client.publish_acked("t.a", b"2", {}, 5.0)  # the PubAck subscription was sent again
    assert ack.seq == 2


async def test_a_connection_without_echo_misses_only_its_own_core_messages(
    server: NatsServer, client: CoalescingClient
) -> None:
    """What context's projecting replica relies on: its own watermark announcements stay away, the
    other replicas' arrive, and events it appends to the stream still reach its stream consumer."""
    quiet = await connect_nats(CommonSettings(nats_url=server.url), "no-echo", echo=False)
    try:
        heard: list[bytes] = []

        async def on_announcement(msg: Msg) -> None:
            heard.append(msg.data)

        await quiet.subscribe("ann", cb=on_announcement)
        streamed = await quiet.jetstream().subscribe("t.>", stream="T", ordered_consumer=True)
        await quiet.publish("ann", b"own")
        await quiet.flush()
        await client.publish("ann", b"other")
        await quiet.jetstream().publish("t.reset", b"appended by itself")
        assert (await streamed.next_msg(timeout=5)).data == b"appended by itself"
        await wait_until(lambda: heard or None, 5.0, "the other connection's announcement")
        await quiet.publish("ann", b"own again")
        await client.publish("ann", b"other again")
        await wait_until(lambda: len(heard) >= 2 or None, 5.0, "the second announcement")
        await quiet.flush()
        assert heard == [b"other", b"other again"]
    finally:
        await quiet.close()


async def test_embedded_server_runs_go_on_one_thread_unless_told(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded nats-server shares its box with the services: one Go P (see `embedded_nats_env`),
    while a GOMAXPROCS of the caller's still wins."""
    assert server.child.pid is not None
    environ = await asyncio.to_thread(Path(f"/proc/{server.child.pid}/environ").read_bytes)
    assert f"GOMAXPROCS={os.environ.get('GOMAXPROCS') or '1'}".encode() in environ.split(b"\0")
    monkeypatch.setenv("GOMAXPROCS", "2")
    assert embedded_nats_env(os.environ)["GOMAXPROCS"] == "2"
