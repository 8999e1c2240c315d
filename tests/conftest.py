"""Shared fixtures: the sandbox served on 127.0.0.1 for the length of a test, and paths to the shared data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.core.params import FaultParams, SandboxParams
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def sandbox_server() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers with given params; every one is stopped when the test ends."""
    started: list[SandboxServer] = []

    def start(faults: FaultParams | None = None, **sandbox: object) -> SandboxServer:
        cfg = SandboxParams(faults=faults or FaultParams(), **sandbox)  # type: ignore[arg-type]
        server = SandboxServer(cfg).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def faces_dev() -> Path:
    path = SHARED_DATA / "faces-dev"
    if not path.is_dir():
        pytest.skip(f"shared photo set not found at {path}")
    return path
