"""Shared fixtures: local servers (tests/support/servers.py) and an isolated AWS environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws_env import isolate_aws, use_dummy_credentials
from tests.support.servers import ServerGroup


@pytest.fixture
def local_servers(tmp_path: Path) -> Iterator[ServerGroup]:
    """Make servers with `.tcp()`, `.http(reply)`, `.https(reply)`; all are closed after the test."""
    group = ServerGroup(tmp_path)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def dummy_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static dummy AWS keys, no other credential source, IMDS disabled."""
    use_dummy_credentials(monkeypatch, tmp_path)


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials anywhere (env cleared, empty config files, IMDS disabled)."""
    isolate_aws(monkeypatch, tmp_path)
