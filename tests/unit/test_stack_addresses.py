"""`make run` puts its embedded NATS and Redis where NATS_URL / REDIS_URL say (a third-party skill
given that URL finds the stack's NATS); tests keep free ports whatever the environment says."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wxbot_devkit.launch import free_port
from wxbot_devkit.system import Stack, StackConfig


def test_make_run_listens_where_the_urls_say(tmp_path: Path) -> None:
    nats_port, redis_port = free_port(), free_port()
    env = {"NATS_URL": f"nats://localhost:{nats_port}", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    stack = Stack(StackConfig(run_dir=tmp_path, ports="default", extra_env=env))
    assert stack.nats.url == f"nats://127.0.0.1:{nats_port}"
    assert stack.redis.url == f"redis://127.0.0.1:{redis_port}/0"


def test_tests_ignore_the_urls(tmp_path: Path) -> None:
    port = free_port()
    stack = Stack(StackConfig(run_dir=tmp_path, ports="free", extra_env={"NATS_URL": f"nats://127.0.0.1:{port}"}))
    assert stack.nats.url != f"nats://127.0.0.1:{port}"


def test_a_busy_or_foreign_address_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"NATS_URL=nats://127.0.0.1:{port}: port {port} on 127.0.0.1 is busy"):
            Stack(StackConfig(run_dir=tmp_path, ports="default", extra_env={"NATS_URL": f"nats://127.0.0.1:{port}"}))
    with pytest.raises(RuntimeError, match="not an address of this machine"):
        Stack(StackConfig(run_dir=tmp_path, ports="default", extra_env={"NATS_URL": "nats://192.0.2.10:4222"}))
