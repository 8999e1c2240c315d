"""The sandbox aiohttp app: the avatar-builder API, image search and photo host, with optional fault injection."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

from aiohttp import web

from pipeline.params import SandboxParams
from pipeline.sandbox import search, traits
from pipeline.sandbox.faults import FaultInjector

ASSETS_PATH = "/avatar-builder-v3/assets"
PREVIEW_PATH = "/avatar-builder-v3/preview/head"

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


def bad_request(parameter: str, message: str) -> web.Response:
    """A 400 whose JSON names the offending parameter."""
    return web.json_response({"error": message, "parameter": parameter}, status=400)


async def assets(request: web.Request) -> web.Response:
    """The option catalogue: traits[gender][style].categories[{key, options[{value}]}]."""
    return web.json_response(traits.catalogue_json())


async def preview_head(request: web.Request) -> web.StreamResponse:
    """Render the head described by the query as PNG, as Bitmoji's preview endpoint does."""
    from pipeline.sandbox.avatar import render_avatar
    from pipeline.viz import encode_png

    sandbox = request.app[SANDBOX_KEY]
    sandbox.requests += 1
    spec, parameter, message = traits.validate_query(dict(request.query))
    if spec is None:
        return bad_request(str(parameter), str(message))

    async def body() -> bytes:
        return await sandbox.render(spec.key(), lambda: encode_png(render_avatar(spec)))

    return await sandbox.serve_image(request, body, "image/png")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "requests": request.app[SANDBOX_KEY].requests})


def create_app(cfg: SandboxParams) -> web.Application:
    """Build the sandbox application; routes are added by each part of the sandbox web."""
    app = web.Application()
    sandbox = Sandbox(cfg)
    app[SANDBOX_KEY] = sandbox
    app.router.add_get(ASSETS_PATH, assets)
    app.router.add_get(PREVIEW_PATH, preview_head)
    app.router.add_get("/healthz", health)
    search.add_routes(app)

    async def shutdown(app: web.Application) -> None:
        sandbox.pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown)
    return app
