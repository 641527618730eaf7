"""Fixtures of the role lock's tests (the world they run in: lock_world.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from fake_etcd import FakeEtcd
from lock_world import World


@pytest.fixture
async def world(nursery: trio.Nursery) -> AsyncIterator[World]:
    w = World(FakeEtcd(), nursery)
    nursery.start_soon(w.watch)
    yield w
