from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prompttap.schemas.store import migrate, open_store
from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def memory_store() -> Any:
    """This test process's embedded ClickHouse (chDB in memory), migrated."""
    client = open_store("chdb://memory")
    migrate(client)
    return client


@pytest.fixture(scope="module")
def pt(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prompttap]:
    """One prompttap for a test module: default upstream and an ``app`` route, both the fake."""
    home = tmp_path_factory.mktemp("prompttap")
    with Prompttap(home, fake.base_url, "--route", f"app={fake.base_url}/v1", "--upstream-timeout", "3") as p:
        yield p


@pytest.fixture
def make_pt(fake: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., Prompttap]]:
    """Factory for a prompttap with its own data folder and flags, stopped after the test."""
    started: list[Prompttap] = []

    def make(*extra: str, upstream: str | None = None, home: Path | None = None, **kw) -> Prompttap:
        p = Prompttap(home or tmp_path / f"pt{len(started)}", upstream or fake.base_url, *extra, **kw)
        started.append(p.start())
        return p

    yield make
    for p in started:
        p.stop()
