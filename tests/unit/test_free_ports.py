"""Ports handed to children that bind them later: a stack takes seven or more before any child has
bound one, so no two may be the same, and none may be one the kernel can give an outgoing
connection meanwhile (a CI run lost a whole module of tests to nlp finding its port taken)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wxbot_devkit.launch import PortPool, ephemeral_range, free_port


def test_a_stacks_worth_of_ports_and_more_are_all_different_and_outside_the_kernels_range() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]


def test_a_busy_port_is_passed_over_the_pool_wraps_around_and_says_when_all_are_busy() -> None:
    first, second = free_port(), free_port()
    while second != first + 1:  # two neighbours, both free and given to no one else
        first, second = second, free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        pool = PortPool(first, second + 1, first)
        assert [pool.take(), pool.take(), pool.take()] == [second, second, second]
        with pytest.raises(RuntimeError, match=f"no free port in \\[{first}, {second}\\)"):
            PortPool(first, second, first).take()


def test_the_kernels_range_is_read_and_a_missing_file_means_linuxs_default(tmp_path: Path) -> None:
    custom = tmp_path / "range"
    custom.write_text("40000\t50000\n")
    assert ephemeral_range(custom) == (40000, 50000)
    assert ephemeral_range(tmp_path / "absent") == (32768, 60999)
