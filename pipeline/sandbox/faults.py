"""Fault injection for the sandbox: seeded, per-URL decisions so that a retry of the same URL can succeed."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections import Counter
from threading import Lock

from aiohttp import web

from pipeline.core.params import FaultParams

FAULT_KINDS = ("error_429", "error_500", "error_503", "truncated", "wrong_type", "corrupt", "oversized")


def _uniform(*parts: object) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class FaultInjector:
    """Decides, for the n-th request of a URL, which fault (if any) to serve.

    The decision is a hash of (seed, url, n): runs are reproducible, and a retry is a fresh draw.
    """

    def __init__(self, cfg: FaultParams) -> None:
        self.cfg = cfg
        self._seen: Counter[str] = Counter()
        self._lock = Lock()
        self.served: Counter[str] = Counter()

    def pick(self, url: str) -> str | None:
        with self._lock:
            attempt = self._seen[url]
            self._seen[url] += 1
        draw = _uniform(self.cfg.seed, url, attempt)
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self.cfg, kind)
            if draw < edge:
                with self._lock:
                    self.served[kind] += 1
                return kind
        return None

    async def delay(self, url: str) -> None:
        if self.cfg.latency_ms > 0:
            jitter = 0.5 + _uniform(self.cfg.seed, "latency", url)
            await asyncio.sleep(self.cfg.latency_ms * jitter / 1000)

    async def respond(self, kind: str, request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
        """Serve `body` damaged in the way `kind` says."""
        retry_after = {"Retry-After": f"{self.cfg.retry_after_s:g}"}
        if kind == "error_429":
            return web.json_response({"error": "rate limited"}, status=429, headers=retry_after)
        if kind == "error_500":
            return web.json_response({"error": "internal error"}, status=500)
        if kind == "error_503":
            return web.json_response({"error": "unavailable"}, status=503, headers=retry_after)
        if kind == "wrong_type":
            return web.Response(text="<html><body>Please sign in</body></html>", content_type="text/html")
        if kind == "corrupt":
            damaged = body[:16] + bytes(b ^ 0x5A for b in body[16 : len(body) // 2]) + body[len(body) // 2 :]
            return web.Response(body=damaged, content_type=content_type)
        if kind == "oversized":
            return web.Response(body=bomb_png(30_000, 30_000), content_type="image/png")
        if kind == "truncated":
            response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(len(body))})
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()  # the client sees the connection drop before Content-Length bytes
            return response
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")


def bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width`x`height` grey pixels: a decompression bomb in miniature."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # only the first rows; the decoder must not get that far
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
