"""Sandbox image search (Bing, Google, Baidu and Flickr result formats) and the photo host behind it."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote, unquote

import cv2
import numpy as np
from aiohttp import web

from pipeline.core.storage import safe_name
from pipeline.sandbox.state import SANDBOX_KEY

PHOTO_EXTS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}
# Share of synthetic search results that are junk, as on the real web: the same photo at a second URL,
# a resized re-upload of an earlier photo, and dead links.
JUNK_RATES = {"copy": 0.04, "resized": 0.04, "dead": 0.02}
# The one grammar of photo URLs: /photos/<identity>/<n>.jpg, a copy or a resized re-upload of photo <n>, or a
# dead link. The crawl reads ground truth back from these URLs, so it parses them with `photo_ref`, never a copy.
_PHOTO_NAME = re.compile(r"(?:(\d+)(-copy\d+|-resized\d+)?|gone-(\d+))\.jpg")
_PHOTO_PATH = re.compile(r"/photos/([^/?#]+)/([^/?#]+)$")


@dataclass(frozen=True)
class PhotoRef:
    """What a sandbox photo URL names: whose photo, which one, and how it was served."""

    identity: str  # the folder name (the safe name of a synthetic person)
    index: int
    variant: str  # "" for the photo itself, "-copy<n>", "-resized<n>", or "gone" for a dead link


def photo_ref(url: str) -> PhotoRef | None:
    """Parse a photo URL (any host, or the manifest's `sandbox:` prefix); None when it is not one."""
    path = _PHOTO_PATH.search(url.split("?")[0])
    name = _PHOTO_NAME.fullmatch(path.group(2)) if path else None
    if path is None or name is None:
        return None
    if name.group(3) is not None:
        return PhotoRef(unquote(path.group(1)), int(name.group(3)), "gone")
    return PhotoRef(unquote(path.group(1)), int(name.group(1)), name.group(2) or "")


def _draw(*parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@cache
def folder_listing(root: str) -> dict[str, tuple[str, ...]]:
    """{identity folder: sorted photo file names} of a real-photo folder."""
    listing: dict[str, tuple[str, ...]] = {}
    for folder in sorted(Path(root).iterdir()):
        if folder.is_dir():
            files = tuple(sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PHOTO_EXTS))
            if files:
                listing[folder.name] = files
    return listing


def match_identity(query: str, listing: dict[str, tuple[str, ...]]) -> str | None:
    """The folder a query names: by safe name, or by the folder name with spaces for underscores."""
    for candidate in (safe_name(query), query.strip().lower().replace(" ", "_")):
        if candidate in listing:
            return candidate
    return None


def search_results(query: str, photos: str | None, per_identity: int, seed: int) -> list[str]:
    """Every result path for a query, in rank order; an unknown person gets no results."""
    if photos:
        listing = folder_listing(photos)
        folder = match_identity(query, listing)
        if folder is None:
            return []
        return [f"/photos/{quote(folder)}/{i}.jpg" for i in range(len(listing[folder]))]
    slug = safe_name(query)
    if slug.startswith("id_") or not query.strip():
        return []
    results = []
    for i in range(per_identity):
        draw = _draw(seed, slug, i)
        # Junk names live in the path: Bing's parser cuts every URL at ".jpg", dropping any query string.
        if i >= 4 and draw < JUNK_RATES["copy"]:
            results.append(f"/photos/{slug}/{int(draw * 1e6) % i}-copy{i}.jpg")
        elif i >= 4 and draw < JUNK_RATES["copy"] + JUNK_RATES["resized"]:
            results.append(f"/photos/{slug}/{int(draw * 1e6) % i}-resized{i}.jpg")
        elif draw > 1 - JUNK_RATES["dead"]:
            results.append(f"/photos/{slug}/gone-{i}.jpg")
        else:
            results.append(f"/photos/{slug}/{i}.jpg")
    return results


def _int(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key, str(default))
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key}={raw!r} is not an integer") from None


def _page(request: web.Request, name_key: str, start: int, size: int) -> list[str]:
    """Absolute photo URLs of one result page for the person named by query parameter `name_key`."""
    cfg = request.app[SANDBOX_KEY].cfg
    results = search_results(request.query.get(name_key, ""), cfg.photos, cfg.photos_per_identity, cfg.seed)
    base = f"{request.scheme}://{request.host}"
    return [base + path for path in results[max(0, start) : max(0, start) + size]]


async def bing_async(request: web.Request) -> web.Response:
    """Bing's `/images/async` result page: `div.imgpt > a.iusc[m]` whose JSON holds `murl`."""
    urls = _page(request, "q", _int(request, "first", 0), _int(request, "count", 35))
    items = []
    for url in urls:
        meta = html.escape(json.dumps({"murl": url, "turl": url, "t": "photo"}, separators=(",", ":")), quote=True)
        items.append(
            f'<li><div class="iuscp"><div class="imgpt"><a class="iusc" m="{meta}" href="#">img</a></div></div></li>'
        )
    return web.Response(
        text=f"<html><body><ul class='dgControl_list'>{''.join(items)}</ul></body></html>", content_type="text/html"
    )


async def google_search(request: web.Request) -> web.Response:
    """Google's image result page: photo URLs inside an AF_initDataCallback script."""
    urls = _page(request, "q", _int(request, "start", 0), 100)
    data = json.dumps([[1, [0, 0, [url, 300, 400]]] for url in urls])
    script = f"<script>AF_initDataCallback({{key: 'ds:1', data:{data}}});</script>"
    return web.Response(text=f"<html><head></head><body>{script}</body></html>", content_type="text/html")


async def baidu_acjson(request: web.Request) -> web.Response:
    """Baidu's `acjson` result JSON: `data[{hoverURL}]`."""
    urls = _page(request, "word", _int(request, "pn", 0), _int(request, "rn", 30))
    return web.json_response({"data": [{"hoverURL": url, "fromPageTitle": "photo"} for url in urls] + [{}]})


async def flickr_rest(request: web.Request) -> web.Response:
    """Flickr's REST API: `flickr.photos.search` pages and `flickr.photos.getSizes`."""
    method = request.query.get("method")
    if not request.query.get("api_key"):
        return web.json_response({"stat": "fail", "code": 100, "message": "Invalid API Key"})
    if method == "flickr.photos.getSizes":
        url = request.query.get("photo_id", "")
        return web.json_response({"stat": "ok", "sizes": {"size": [{"label": "Large", "source": url}]}})
    if method == "flickr.photos.search":
        per_page, page = _int(request, "per_page", 100), _int(request, "page", 1)
        urls = _page(request, "text", (page - 1) * per_page, per_page)
        photos = [{"id": url, "title": "photo"} for url in urls]
        return web.json_response({"stat": "ok", "photos": {"page": page, "perpage": per_page, "photo": photos}})
    return web.json_response({"stat": "fail", "code": 112, "message": f"Method {method!r} not found"})


def _resized(jpeg: bytes, factor: float, quality: int) -> bytes:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


async def photo(request: web.Request) -> web.StreamResponse:
    """A photo by identity and rank: a real file of the photo folder, or a synthetic render."""
    from pipeline.sandbox.photo import encode_jpeg, photo_jpeg_quality, render_photo

    sandbox = request.app[SANDBOX_KEY]
    cfg = sandbox.cfg
    identity, name = request.match_info["identity"], request.match_info["name"]
    ref = photo_ref(f"/photos/{quote(identity)}/{name}")
    if ref is None or ref.variant == "gone":
        raise web.HTTPNotFound(text=f"no photo {name} of {identity}")
    index, variant = ref.index, ref.variant
    if cfg.photos:
        files = folder_listing(cfg.photos).get(identity, ())
        if index >= len(files):
            raise web.HTTPNotFound(text=f"no photo {index} of {identity}")
        path = Path(cfg.photos) / identity / files[index]
        ctype = PHOTO_EXTS[path.suffix.lower()]
        return await sandbox.serve_image(request, _constant(path.read_bytes()), ctype)
    if index >= cfg.photos_per_identity:
        raise web.HTTPNotFound(text=f"no photo {index} of {identity}")
    quality = photo_jpeg_quality(identity, index, cfg.seed)
    key = f"photo/{cfg.seed}/{identity}/{index}"

    def make() -> bytes:
        return encode_jpeg(render_photo(identity, index, cfg.seed).image, quality)

    factor = 0.8 if variant.startswith("-resized") else 1.0

    async def body() -> bytes:
        data = await sandbox.render(key, make)
        return _resized(data, factor, max(50, quality - 10)) if factor != 1 else data

    return await sandbox.serve_image(request, body, "image/jpeg")


def _constant(data: bytes):  # type: ignore[no-untyped-def]
    async def body() -> bytes:
        return data

    return body


def add_routes(app: web.Application) -> None:
    app.router.add_get("/images/async", bing_async)
    app.router.add_get("/search", google_search)
    app.router.add_get("/search/acjson", baidu_acjson)
    app.router.add_get("/services/rest/", flickr_rest)
    app.router.add_get("/photos/{identity}/{name}", photo)
