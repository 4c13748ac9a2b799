"""The pytest plugin that cldyn installs for its own and the task plugins' tests."""

from __future__ import annotations

import socket

import pytest

from cldyn_cli.testing import NetworkUsed


def test_no_network_refuses_and_records_every_attempt(no_network: list[str]) -> None:
    with pytest.raises(NetworkUsed):
        socket.create_connection(("example.org", 80), timeout=1)
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("example.org", 80)
    assert [a.split("(")[0] for a in no_network] == ["create_connection", "getaddrinfo"]
    no_network.clear()  # the fixture fails any test that leaves attempts behind
