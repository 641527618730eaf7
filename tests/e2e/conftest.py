"""Fixtures for the end-to-end tests (helpers live in e2e_helpers.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from chatterd.testing import HOST


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 to send raw datagrams from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        yield s
