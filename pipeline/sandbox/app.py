"""The sandbox aiohttp app: the avatar-builder API, image search and photo host, with optional fault injection."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from pipeline.core import traits
from pipeline.core.params import SandboxParams
from pipeline.sandbox import search
from pipeline.sandbox.state import SANDBOX_KEY, Sandbox

ASSETS_PATH = "/avatar-builder-v3/assets"
PREVIEW_PATH = "/avatar-builder-v3/preview/head"


def preview_url(base: str, spec: traits.AvatarSpec) -> str:
    """The avatar API's preview URL of `spec` under the endpoint `base` (the sandbox's or a real one)."""
    return f"{base}{PREVIEW_PATH}?{urlencode(spec.query())}"


def bad_request(parameter: str, message: str) -> web.Response:
    """A 400 whose JSON names the offending parameter."""
    return web.json_response({"error": message, "parameter": parameter}, status=400)


async def assets(request: web.Request) -> web.Response:
    """The option catalogue: traits[gender][style].categories[{key, options[{value}]}]."""
    return web.json_response(traits.catalogue_json())


async def preview_head(request: web.Request) -> web.StreamResponse:
    """Render the head described by the query as PNG, as Bitmoji's preview endpoint does."""
    from pipeline.core.viz import encode_png
    from pipeline.sandbox.avatar import render_avatar

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
