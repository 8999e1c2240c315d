"""Run the sandbox app on 127.0.0.1: in a background thread of the calling process, or standalone."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from pipeline.core.params import SandboxParams
from pipeline.core.reuse import code_version
from pipeline.sandbox.app import create_app

HOST = "127.0.0.1"  # the sandbox never listens beyond loopback


class SandboxServer:
    """The sandbox served from a daemon thread with its own event loop, on an ephemeral port by default.

    Use as a context manager; `url` is the base URL once entered.
    """

    def __init__(self, cfg: SandboxParams, port: int = 0) -> None:
        self.cfg = cfg
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.app: web.Application | None = None

    def __enter__(self) -> SandboxServer:
        self._thread = threading.Thread(target=self._run, name="sandbox-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the sandbox server did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the sandbox server failed to start on {HOST}:{self.port}: {self._error}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = self._runner = self._thread = None  # stopping twice is harmless

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the caller by __enter__
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _start(self) -> None:
        self.app = create_app(self.cfg)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"


def serve_forever(cfg: SandboxParams, port: int, access_log: bool = False) -> None:
    """Serve the sandbox in the foreground until interrupted (`i2c sandbox serve`)."""
    app = create_app(cfg)
    web.run_app(app, host=HOST, port=port, access_log=web.access_logger if access_log else None, print=None)


def served_content(cfg: SandboxParams, part: Literal["avatars", "photos"]) -> dict[str, Any]:
    """What decides the bytes the sandbox serves at a URL, as opposed to how fast: a crawl keeps the bytes it
    downloaded only while this stays the same.

    Avatars depend on the renderer's code and the faults (a `corrupt` fault can serve damaged bytes that still
    decode); photos also on the seed of the synthetic people and on the files of a served photo folder. Latency,
    Retry-After and the render cache change only timing.
    """
    content: dict[str, Any] = {
        "code": code_version("pipeline.sandbox.app"),
        "faults": cfg.faults.model_dump(mode="json", exclude={"latency_ms", "retry_after_s"}),
    }
    if part == "photos":
        content.update(seed=cfg.seed, photos=_folder_fingerprint(cfg.photos))
    return content


def _folder_fingerprint(root: str | None) -> str | None:
    """A hash of the names and sizes of a served photo folder's files: adding or replacing a photo changes it."""
    if not root:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]
