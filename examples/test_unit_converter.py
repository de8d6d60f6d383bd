"""The example skill as its author would check it: started by its one command against a real
nats-server, then found and called exactly as wxbot finds and calls it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from wxbot_devkit.launch import Child, NatsServer

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).parent / "unit_converter.py"


async def registered(nc: Client, within_s: float) -> dict[str, Any]:
    """The skill's INFO, polled until the starting process answers."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return dict(json.loads((await nc.request("$SRV.INFO.unit-converter", b"", timeout=0.5)).data))
        except nats.errors.Error:
            assert time.monotonic() < deadline, f"the example did not register within {within_s} s"
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def started(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Client, dict[str, Any]]]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    await server.start()
    skill = Child("converter", [sys.executable, str(EXAMPLE)], env={**os.environ, "NATS_URL": server.url})
    await skill.start()
    client = await nats.connect(server.url)
    try:
        yield client, await registered(client, 20)
    finally:
        await client.drain()
        await skill.stop()
        await server.stop()


async def test_it_registers_a_described_tool_with_a_schema_and_a_command(
    started: tuple[Client, dict[str, Any]],
) -> None:
    [endpoint] = started[1]["endpoints"]
    meta = endpoint["metadata"]
    assert endpoint["name"] == "convert_temperature" and meta["command"] == "/temp"
    assert "Celsius" in meta["description"]
    schema = json.loads(meta["parameters"])
    assert schema["required"] == ["value"] and schema["properties"]["to"]["enum"] == ["celsius", "fahrenheit"]


@pytest.mark.parametrize(
    ("args", "reply", "error"),
    [
        ({"value": 100}, "100 °C = 212.0 °F", None),
        ({"value": 212, "to": "celsius"}, "212 °F = 100.0 °C", None),
        ({"value": -300, "to": "fahrenheit"}, None, "-300 is below absolute zero"),
        ({"value": "hot"}, None, "invalid arguments: value"),
    ],
)
async def test_it_converts_and_refuses_plainly(
    started: tuple[Client, dict[str, Any]], args: dict[str, object], reply: str, error: str
) -> None:
    msg = await started[0].request("convert_temperature", json.dumps(args).encode(), timeout=5)
    if error is None:
        assert json.loads(msg.data) == reply
    else:
        assert (msg.headers or {}).get("Nats-Service-Error", "").startswith(error)
