"""A pytest plugin for the tests of cldyn and of task plugins: the ``no_network`` fixture.

Installed with cldyn (entry point ``pytest11``), so any test suite may request the fixture, or
make it apply to every test with an autouse fixture of its own::

    @pytest.fixture(autouse=True)
    def offline(no_network):
        yield no_network
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest


class NetworkUsed(OSError):
    """Raised by any attempt to reach the network during a test."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Cut the network off for one test: any attempt fails at once (no hang) and fails the test.

    Yields the list of attempts, so a test can also check what was tried.
    """
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{what}{args[:2]}")
            raise NetworkUsed(f"network access in a test: {what}{args[:2]}")
        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    yield attempts
    assert not attempts, f"network was used: {attempts}"
