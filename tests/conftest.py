"""Shared fixtures: the sandbox served on 127.0.0.1 for the length of a test, and paths to the shared data."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.core.params import FaultParams, SandboxParams
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Bytecode, tool caches and the venv are the only things a test run may add to the checkout.
_DEBRIS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def _checkout_files() -> dict[str, tuple[int, int]]:
    files = {}
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _DEBRIS and not d.endswith(".egg-info")]
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            files[os.path.relpath(os.path.join(folder, name), REPO)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched() -> Iterator[None]:
    """Tests write only under tmp_path: the session fails if any file in the checkout appeared or changed."""
    before = _checkout_files()
    yield
    after = _checkout_files()
    touched = sorted(path for path in after.keys() | before.keys() if before.get(path) != after.get(path))
    assert not touched, f"tests wrote into the checkout (write under tmp_path instead): {touched[:20]}"


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
