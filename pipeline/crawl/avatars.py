"""The async avatar crawler: read the catalogue, sample trait combinations, fetch renders, keep a resumable manifest."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from tqdm import tqdm

from pipeline.core.manifest import (
    Journal,
    count_reasons,
    journal_path,
    previous_rows,
    prune_unreferenced,
    write_manifest,
)
from pipeline.core.params import CrawlAvatarsParams, SandboxParams, resolved
from pipeline.core.storage import DiskFullError, atomic_write_bytes, content_path, remove_partials
from pipeline.crawl.fetch import USER_AGENT, FetchOutcome, RetryPolicy, fetch_image, fetch_json
from pipeline.crawl.validate import ImageLimits
from pipeline.sandbox import traits
from pipeline.sandbox.app import ASSETS_PATH, PREVIEW_PATH
from pipeline.sandbox.server import SandboxServer

BASE_COLUMNS = ["key", "gender", "style", "scale", "rotation"]
RESULT_COLUMNS = ["url", "sha256", "path", "width", "height", "status", "reason", "detail", "attempts", "http_status"]
MANIFEST_COLUMNS = BASE_COLUMNS + sorted(traits.TRAIT_KEYS) + RESULT_COLUMNS
IO_THREADS = 4  # decode, hash and write off the event loop (they release the GIL)


class CrawlError(RuntimeError):
    """The crawl could not do its job at all (nothing saved, catalogue unreadable, disk full)."""


@dataclass
class CrawlReport:
    """Counts of one crawl, written as the stage's metrics."""

    endpoint: str
    requested: int = 0
    saved: int = 0
    failed: int = 0
    resumed: int = 0
    fetched: int = 0
    fetch_seconds: float = 0.0
    bytes: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        rate = self.fetched / self.fetch_seconds if self.fetch_seconds > 0 else 0.0
        return {
            "requested": self.requested,
            "saved": self.saved,
            "failed": self.failed,
            "failed_by_reason": self.failed_by_reason,
            "resumed": self.resumed,
            "fetched": self.fetched,
            "avatars_per_s": round(rate, 2),
            "bytes": self.bytes,
        }


@contextlib.contextmanager
def avatar_endpoint(endpoint: str, sandbox: SandboxParams) -> Iterator[str]:
    """Yield the base URL to crawl: the in-process sandbox for `sandbox`, else the URL itself."""
    if endpoint != "sandbox":
        yield endpoint
        return
    with SandboxServer(sandbox) as server:
        yield server.url


def preview_url(base: str, spec: traits.AvatarSpec) -> str:
    return f"{base}{PREVIEW_PATH}?{urlencode(spec.query())}"


def _row(spec: traits.AvatarSpec, url: str) -> dict[str, Any]:
    row: dict[str, Any] = {"key": spec.key(), "gender": spec.gender, "style": spec.style, "scale": spec.scale}
    row["rotation"] = spec.rotation
    row.update({key: -1 for key in traits.TRAIT_KEYS})
    row.update(spec.trait_dict)
    row.update({"url": url, "sha256": "", "path": "", "width": 0, "height": 0, "attempts": 0, "http_status": 0})
    return row


def _is_saved(row: dict[str, Any] | None, root: Path) -> bool:
    return bool(row) and row.get("status") == "ok" and bool(row.get("path")) and (root / str(row["path"])).is_file()


def _record(row: dict[str, Any], outcome: FetchOutcome, out_dir: Path) -> dict[str, Any]:
    """Save a fetched image under its content hash and fill in the manifest row."""
    row = dict(row, attempts=outcome.attempts, http_status=outcome.http_status or 0)
    if outcome.image is None:
        return dict(row, status="failed", reason=outcome.reason, detail=outcome.detail)
    image = outcome.image
    path = content_path(out_dir, image.sha256, image.ext)
    if not path.exists():
        atomic_write_bytes(path, image.data)
    relative = path.relative_to(out_dir).as_posix()
    return dict(
        row,
        sha256=image.sha256,
        path=relative,
        width=image.width,
        height=image.height,
        status="ok",
        reason="",
        detail="",
    )


async def _crawl(cfg: CrawlAvatarsParams, base: str, progress: bool, report: CrawlReport) -> list[dict[str, Any]]:
    out_dir, manifest = Path(cfg.out_dir), Path(cfg.manifest)
    policy = RetryPolicy(cfg.retries, cfg.backoff_s, cfg.backoff_max_s)
    limits = ImageLimits(cfg.max_bytes, cfg.max_pixels, cfg.min_size, frozenset({"png", "jpg", "webp"}))
    rng = random.Random(cfg.seed)
    connector = aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}) as session:
        try:
            body = await fetch_json(session, base + ASSETS_PATH, policy, cfg.timeout_s, rng)
            catalogue = traits.parse_catalogue(body)
        except (ConnectionError, ValueError) as exc:
            raise CrawlError(f"cannot read the avatar catalogue of {base}: {exc}") from None
        specs = traits.sample_specs(catalogue, cfg.count, cfg.seed, tuple(cfg.genders), tuple(cfg.styles), cfg.scale)
        rows = {spec.key(): _row(spec, preview_url(base, spec)) for spec in specs}
        earlier = previous_rows(manifest, "key")
        done = {k: dict(earlier[k], url=rows[k]["url"]) for k in rows if _is_saved(earlier.get(k), out_dir)}
        rows.update(done)
        pending = [k for k in rows if k not in done]
        report.resumed = len(done)

        queue: asyncio.Queue[str] = asyncio.Queue()
        for key in pending:
            queue.put_nowait(key)
        disk_full: list[DiskFullError] = []
        bar = tqdm(
            total=len(rows), initial=len(done), desc="crawl avatars", unit="img", disable=not progress, mininterval=1.0
        )

        async def worker(journal: Journal) -> None:
            while not disk_full:
                try:
                    key = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                outcome = await fetch_image(session, rows[key]["url"], limits, policy, cfg.timeout_s, rng, pool)
                try:
                    rows[key] = await loop.run_in_executor(pool, _record, rows[key], outcome, out_dir)
                except DiskFullError as exc:
                    disk_full.append(exc)
                    rows[key] = dict(rows[key], status="failed", reason="disk_full", detail=str(exc))
                journal.append(rows[key])
                report.fetched += 1
                report.bytes += len(outcome.image.data) if outcome.image else 0
                bar.update(1)

        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        with Journal(journal_path(manifest)) as journal, ThreadPoolExecutor(IO_THREADS, "crawl-io") as pool:
            await asyncio.gather(*(worker(journal) for _ in range(min(cfg.concurrency, max(1, len(pending))))))
        report.fetch_seconds = time.perf_counter() - start
        bar.close()
    ordered = [rows[spec.key()] for spec in specs]
    for row in ordered:
        if "status" not in row:  # never attempted because the disk filled up
            row.update(status="failed", reason="disk_full", detail="not attempted: the disk was full")
    if disk_full:
        report.failed_by_reason = count_reasons(ordered)
        raise CrawlError(
            f"{disk_full[0]}; free some space and re-run: the {sum(r['status'] == 'ok' for r in ordered)}"
            " avatars already saved are kept and the journal resumes the rest"
        )
    return ordered


def crawl_avatars(cfg: CrawlAvatarsParams, sandbox: SandboxParams, progress: bool = True) -> CrawlReport:
    """Run the whole avatar crawl and write the manifest; resumable after any interruption.

    Raises:
        CrawlError: when the catalogue cannot be read, the disk fills up, or not a single avatar was saved.
    """
    out_dir, manifest = Path(cfg.out_dir), Path(cfg.manifest)
    remove_partials(out_dir)
    remove_partials(manifest.parent)
    report = CrawlReport(endpoint=cfg.endpoint)
    with avatar_endpoint(cfg.endpoint, sandbox) as base:
        rows = asyncio.run(_crawl(cfg, base, progress, report))
    for row in rows:  # URLs of an ephemeral sandbox port would make identical runs differ
        row["url"] = row["url"].replace(base, cfg.endpoint if cfg.endpoint != "sandbox" else "sandbox:")
    write_manifest(rows, manifest, MANIFEST_COLUMNS, {"crawl.avatars": resolved(cfg), "sandbox": resolved(sandbox)})
    Journal(journal_path(manifest)).remove()
    prune_unreferenced(out_dir, {out_dir / r["path"] for r in rows if r["status"] == "ok"})
    report.requested = len(rows)
    report.saved = sum(r["status"] == "ok" for r in rows)
    report.failed = report.requested - report.saved
    report.failed_by_reason = count_reasons(rows)
    if report.saved == 0:
        top = next(iter(report.failed_by_reason), "unknown")
        raise CrawlError(
            f"all {report.requested} avatar requests to {cfg.endpoint} ({base}) failed; most common reason: {top} "
            f"({report.failed_by_reason.get(top, 0)}x). See {manifest} for every URL and reason."
        )
    return report
