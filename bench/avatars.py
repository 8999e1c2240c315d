"""Benchmark: the same N sandbox avatar URLs crawled by our async crawler, a sequential loop and icrawler."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from pipeline.core import traits
from pipeline.core.params import CrawlAvatarsParams, SandboxParams
from pipeline.core.storage import atomic_write_bytes, content_path
from pipeline.core.viz import encode_png
from pipeline.crawl.avatars import crawl_avatars, preview_url
from pipeline.crawl.validate import ImageLimits, validate_image
from pipeline.sandbox.avatar import render_avatar


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(n: int, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """The sandbox in its own process (its own core), with a cache that holds every benchmark avatar."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "sandbox",
        "serve",
        "--port",
        str(port),
        "-S",
        f"sandbox.render_cache={n + 16}",
        "-S",
        f"sandbox.faults.latency_ms={latency_ms}",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url + "/healthz", timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sandbox server did not come up")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def sequential(urls: list[str], out: Path) -> int:
    """Baseline: one requests.Session, one URL after another, with the same validation and storage as ours."""
    session = requests.Session()
    saved = 0
    for url in urls:
        response = session.get(url, timeout=20)
        image = validate_image(response.content, response.headers.get("Content-Type"), ImageLimits())
        path = content_path(out, image.sha256, image.ext)
        if not path.exists():
            atomic_write_bytes(path, image.data)
        saved += 1
    return saved


def icrawler_urllist(urls: list[str], out: Path, threads: int) -> int:
    """icrawler's own UrlListCrawler with its threaded ImageDownloader."""
    from icrawler.builtin import UrlListCrawler

    listing = out.parent / f"{out.name}.txt"
    listing.write_text("\n".join(urls))
    crawler = UrlListCrawler(downloader_threads=threads, storage={"root_dir": str(out)}, log_level=logging.ERROR)
    crawler.crawl(str(listing), max_num=len(urls))
    return sum(1 for _ in out.iterdir())


def _time_to_last_file(out: Path, start: float) -> float:
    mtimes = [p.stat().st_mtime for p in out.rglob("*") if p.is_file()]
    return max(mtimes) - start if mtimes else float("nan")


def where_the_time_goes(specs: list[traits.AvatarSpec], sample: int = 200) -> dict[str, float]:
    """Per-avatar milliseconds of the server's render+encode and of the client's validation and write."""
    specs = specs[:sample]
    start = time.perf_counter()
    images = [render_avatar(s) for s in specs]
    render = time.perf_counter() - start
    start = time.perf_counter()
    pngs = [encode_png(i) for i in images]
    encode = time.perf_counter() - start
    start = time.perf_counter()
    valid = [validate_image(p, "image/png", ImageLimits()) for p in pngs]
    validate = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for v in valid:
            hashlib.sha256(v.data).hexdigest()
            atomic_write_bytes(content_path(Path(tmp), v.sha256, "png"), v.data)
        write = time.perf_counter() - start
    per = 1000 / len(specs)
    return {
        "render_ms": render * per,
        "encode_ms": encode * per,
        "validate_ms": validate * per,
        "hash_write_ms": write * per,
        "kb_per_avatar": sum(map(len, pngs)) / len(pngs) / 1024,
    }


def scenario(n: int, latency_ms: float, workdir: Path, specs: list[traits.AvatarSpec]) -> list[dict[str, Any]]:
    """Every method on the same n URLs against one server; the first (untimed for warm rows) run fills its cache."""
    process, base = start_server(n, latency_ms)
    rows: list[dict[str, Any]] = []
    tag = f"{latency_ms:g} ms latency" if latency_ms else "loopback"
    try:
        urls = [preview_url(base, s) for s in specs]

        def ours(concurrency: int, label: str) -> dict[str, Any]:
            out = workdir / f"ours-{latency_ms}-c{concurrency}-{len(label)}"
            cfg = CrawlAvatarsParams(
                endpoint=base,
                count=n,
                concurrency=concurrency,
                out_dir=str(out),
                manifest=str(out) + ".parquet",
                metrics=str(out) + ".json",
            )
            start = time.perf_counter()
            report = crawl_avatars(cfg, SandboxParams(), progress=False)
            return _row(f"{tag}: ours, concurrency {concurrency}{label}", time.perf_counter() - start, report.kept)

        cold = ours(64, " (cold cache: server renders)")  # fills the server's cache for the rows below
        if not latency_ms:
            rows.append(cold)
        for concurrency in (1, 8, 32, 64):
            rows.append(ours(concurrency, ""))
        out = workdir / f"sequential-{latency_ms}"
        start = time.perf_counter()
        saved = sequential(urls, out)
        rows.append(_row(f"{tag}: sequential requests loop", time.perf_counter() - start, saved))
        for threads in (1, 8):
            out = workdir / f"icrawler-{latency_ms}-{threads}"
            start_wall, start = time.time(), time.perf_counter()
            saved = icrawler_urllist(urls, out, threads)
            total = time.perf_counter() - start
            rows.append(
                _row(
                    f"{tag}: icrawler UrlListCrawler, {threads} thread(s)",
                    total,
                    saved,
                    _time_to_last_file(out, start_wall),
                )
            )
    finally:
        stop_server(process)
    return rows


def run(n: int = 1000, latency_ms: float = 50.0) -> dict[str, Any]:
    """Crawl the same n URLs every way, on loopback and behind a network-like latency, plus the cost breakdown."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-avatars-"))
    catalogue = traits.parse_catalogue(traits.catalogue_json())
    specs = traits.sample_specs(catalogue, n, 0, traits.GENDERS, traits.STYLES)
    try:
        rows = scenario(n, 0.0, workdir, specs) + scenario(n, latency_ms, workdir, specs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "n": n,
        "rows": rows,
        "costs": where_the_time_goes(specs),
        "cores": os.cpu_count(),
        "latency_ms": latency_ms,
    }


def _row(method: str, seconds: float, saved: int, to_last_file: float | None = None) -> dict[str, Any]:
    busy = to_last_file if to_last_file is not None else seconds
    return {"method": method, "seconds": seconds, "saved": saved, "to_last_file": busy, "per_s": saved / busy}
