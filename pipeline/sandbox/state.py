"""State the sandbox handlers share: config, faults, the render cache and the render threads."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

from aiohttp import web

from pipeline.core.params import SandboxParams
from pipeline.sandbox.faults import FaultInjector

SANDBOX_KEY = web.AppKey("sandbox", "Sandbox")


class RenderCache:
    """A small thread-safe LRU of encoded images, so repeated requests cost no render."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    def get_or_make(self, key: str, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        if self.capacity:
            with self._lock:
                self._items[key] = data
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return data


class Sandbox:
    """Everything the handlers share: config, faults, the render cache and the render threads."""

    def __init__(self, cfg: SandboxParams, render_threads: int = 4) -> None:
        self.cfg = cfg
        self.faults = FaultInjector(cfg.faults)
        self.cache = RenderCache(cfg.render_cache)
        # OpenCV releases the GIL while drawing and encoding, so threads render in parallel with the event loop.
        self.pool = ThreadPoolExecutor(render_threads, thread_name_prefix="sandbox-render")
        self.requests = 0

    async def render(self, key: str, make: Callable[[], bytes]) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.cache.get_or_make, key, make)

    async def serve_image(
        self, request: web.Request, body: Callable[[], Awaitable[bytes]], ctype: str
    ) -> web.StreamResponse:
        """Serve an image, or the fault the injector picks for this URL and attempt."""
        await self.faults.delay(str(request.rel_url))
        fault = self.faults.pick(str(request.rel_url))
        data = await body()
        if fault is not None:
            return await self.faults.respond(fault, request, data, ctype)
        return web.Response(body=data, content_type=ctype)
