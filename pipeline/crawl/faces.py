"""Face photo crawl: icrawler's Feeder -> Parser -> Downloader path into a deduplicated, resumable manifest."""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icrawler import Crawler, ImageDownloader

from pipeline.core.manifest import (
    Journal,
    count_reasons,
    journal_path,
    previous_rows,
    prune_unreferenced,
    write_manifest,
)
from pipeline.core.params import CrawlFacesParams, SandboxParams, resolved
from pipeline.core.storage import remove_partials, safe_name
from pipeline.crawl import engines
from pipeline.crawl.face_store import TRAIT_COLUMNS, FaceSaver, synthetic_columns
from pipeline.crawl.fetch import USER_AGENT, FetchFailed, RetryPolicy, fetch_bytes
from pipeline.crawl.validate import ImageLimits
from pipeline.sandbox.search import PHOTO_EXTS, folder_listing
from pipeline.sandbox.server import SandboxServer

log = logging.getLogger(__name__)


class FaceCrawlError(RuntimeError):
    """The face crawl cannot give a usable result (an identity with no photos, no network, a full disk)."""


@dataclass
class FaceCrawlReport:
    """Counts of one face crawl, written as the stage's metrics."""

    source: str
    identities: int = 0
    candidates: int = 0
    saved: int = 0
    rejected: int = 0
    resumed: int = 0
    seconds: float = 0.0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    saved_by_identity: dict[str, int] = field(default_factory=dict)
    short_identities: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "candidates": self.candidates,
            "saved": self.saved,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
            "resumed": self.resumed,
            "photos_per_s": round((self.candidates - self.resumed) / self.seconds, 2) if self.seconds else 0.0,
            "min_saved_per_identity": min(self.saved_by_identity.values(), default=0),
            "short_identities": len(self.short_identities),
            "saved_by_identity": {safe_name(name): count for name, count in self.saved_by_identity.items()},
        }


class ManifestDownloader(ImageDownloader):
    """icrawler's downloader, writing through FaceSaver: validation, dedupe, atomic storage and one row per URL."""

    def __init__(self, *args: Any, saver: FaceSaver, cfg: CrawlFacesParams, source: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saver, self.cfg, self.source = saver, cfg, source
        self.policy = RetryPolicy(cfg.retries, cfg.backoff_s, cfg.backoff_max_s)
        self.limits = ImageLimits(cfg.max_bytes, cfg.max_pixels, cfg.min_size)

    def download(self, task: dict[str, Any], default_ext: str, timeout: float = 5, **kwargs: Any) -> bool:
        base = self.saver.base_row(task["identity"], self.source, int(task.get("rank", 0)), task["file_url"])
        if self.saver.resume(base):
            return True
        if self.saver.stopped:
            return False
        try:
            fetched = fetch_bytes(
                self.session, task["file_url"], self.limits.max_bytes, self.policy, self.cfg.timeout_s
            )
        except FetchFailed as failed:
            self.saver.reject(base, failed.reason, failed.detail, failed.attempts, failed.http_status)
            return False
        row = self.saver.accept(base, fetched.data, fetched.content_type, self.limits, fetched.attempts)
        return row["status"] == "ok"

    def worker_exec(
        self, max_num: int, default_ext: str = "jpg", queue_timeout: float = 1, req_timeout: float = 5, **kwargs: Any
    ) -> None:
        # icrawler's loop quits after one idle queue timeout once anything was fetched, even while the parser is
        # still paging; this one waits until the parser has exited and the queue is drained.
        self.max_num = max_num
        while not self.saver.stopped:
            try:
                task = self.in_queue.get(timeout=queue_timeout)
            except queue.Empty:
                if self.signal.get("parser_exited"):
                    return
                continue
            try:
                self.download(task, default_ext, req_timeout)
            except Exception as exc:  # a bug must cost one row, never the thread and every task behind it
                log.exception("downloader failed on %s", task.get("file_url"))
                base = self.saver.base_row(task["identity"], self.source, int(task.get("rank", 0)), task["file_url"])
                self.saver.reject(base, "internal_error", f"{type(exc).__name__}: {exc}", 0, None)
            finally:
                self.in_queue.task_done()


@contextlib.contextmanager
def search_host(cfg: CrawlFacesParams, sandbox: SandboxParams) -> Iterator[tuple[str, str]]:
    """Yield (engine, base URL): the in-process sandbox for `sandbox`, else the engine's host or `engine_url`."""
    if cfg.source == "sandbox":
        with SandboxServer(sandbox) as server:
            yield "sandbox", server.url
        return
    yield cfg.source, (cfg.engine_url or engines.REAL_HOSTS.get(cfg.source, "")).rstrip("/")


def resolve_identities(cfg: CrawlFacesParams, sandbox: SandboxParams) -> list[str]:
    """The names to crawl; an empty list means every folder of the photo folder being served or imported."""
    if cfg.identities:
        return list(cfg.identities)
    if cfg.source == "urls":
        return list(dict.fromkeys(identity for identity, _ in read_url_list(cfg)))
    root = cfg.folder if cfg.source == "folder" else sandbox.photos if cfg.source == "sandbox" else None
    if root and Path(root).is_dir():
        return list(folder_listing(str(Path(root).resolve())))
    raise FaceCrawlError(
        "crawl.faces.identities is empty and there is no photo folder to take names from; list the people to crawl"
    )


def _run_icrawler(
    engine: str, base: str, names: list[str], cfg: CrawlFacesParams, saver: FaceSaver, stats: engines.PageStats
) -> None:
    api_key = ""
    if engine == "flickr":
        import os

        api_key = os.environ.get("FLICKR_API_KEY", "")
        if not api_key:
            raise FaceCrawlError("source flickr needs an API key in the FLICKR_API_KEY environment variable")
    crawler = Crawler(
        feeder_cls=engines.MultiIdentityFeeder,
        parser_cls=engines.parser_class(engine),
        downloader_cls=ManifestDownloader,
        parser_threads=2,
        downloader_threads=cfg.concurrency,
        storage={"root_dir": cfg.out_dir},
        log_level=logging.CRITICAL,  # offline engines log every failed page; the report says it once
        extra_parser_args={"stats": stats, "per_identity": cfg.per_identity},
        extra_downloader_args={"saver": saver, "cfg": cfg, "source": engine},
    )
    crawler.session.headers["User-Agent"] = USER_AGENT
    crawler.crawl(
        feeder_kwargs={
            "engine": engine,
            "base_url": base,
            "identities": names,
            "per_identity": cfg.per_identity,
            "api_key": api_key,
        },
        parser_kwargs={"queue_timeout": 0.5, "req_timeout": cfg.timeout_s, "max_retry": cfg.retries + 1},
        downloader_kwargs={"max_num": 0, "queue_timeout": 0.5},
    )


def read_url_list(cfg: CrawlFacesParams) -> list[tuple[str, str]]:
    """The (identity, url) pairs of a `urls` source file.

    Raises:
        FaceCrawlError: naming the file and line of anything that is not `identity,http(s)://url`.
    """
    path = Path(str(cfg.urls_file))
    if not path.is_file():
        raise FaceCrawlError(f"crawl.faces.urls_file {path} not found; write one `identity,url` line per photo")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        identity, sep, url = line.rpartition(",")
        if not sep or not identity.strip() or not url.strip().startswith(("http://", "https://")):
            raise FaceCrawlError(f"{path}:{number}: expected `identity,http(s)://url`, got {line!r}")
        pairs.append((identity.strip(), url.strip()))
    return pairs


def _run_url_list(cfg: CrawlFacesParams, saver: FaceSaver) -> None:
    pairs = read_url_list(cfg)
    if cfg.identities:
        pairs = [(identity, url) for identity, url in pairs if identity in cfg.identities]
    crawler = Crawler(
        feeder_cls=engines.UrlListFeeder,
        parser_cls=engines.PassThroughParser,
        downloader_cls=ManifestDownloader,
        downloader_threads=cfg.concurrency,
        storage={"root_dir": cfg.out_dir},
        log_level=logging.CRITICAL,
        extra_downloader_args={"saver": saver, "cfg": cfg, "source": "urls"},
    )
    crawler.crawl(
        feeder_kwargs={"pairs": pairs},
        parser_kwargs={"queue_timeout": 0.5},
        downloader_kwargs={"max_num": 0, "queue_timeout": 0.5},
    )


def _import_folder(cfg: CrawlFacesParams, names: list[str], saver: FaceSaver) -> None:
    root = Path(str(cfg.folder))
    if not root.is_dir():
        raise FaceCrawlError(f"crawl.faces.folder {root} is not a directory of <identity>/<images>")
    limits = ImageLimits(cfg.max_bytes, cfg.max_pixels, cfg.min_size)
    for name in names:
        folder = root / name if (root / name).is_dir() else root / safe_name(name)
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in PHOTO_EXTS) if folder.is_dir() else []
        for rank, path in enumerate(files[: cfg.per_identity]):
            base = saver.base_row(name, "folder", rank, path.resolve().as_uri())
            if not saver.resume(base):
                saver.accept(base, path.read_bytes(), None, limits, 1)


def crawl_faces(cfg: CrawlFacesParams, sandbox: SandboxParams, progress: bool = True) -> FaceCrawlReport:
    """Crawl photos of every identity and write the manifest; resumable after any interruption.

    Raises:
        FaceCrawlError: when an identity ends with no photo, the engine is unreachable, or the disk fills up.
    """
    out_dir, manifest = Path(cfg.out_dir), Path(cfg.manifest)
    names = resolve_identities(cfg, sandbox)
    remove_partials(out_dir)
    remove_partials(manifest.parent)
    report = FaceCrawlReport(source=cfg.source, identities=len(names))
    earlier = previous_rows(manifest, "key")
    stats = engines.PageStats()
    start = time.perf_counter()
    with Journal(journal_path(manifest)) as journal, search_host(cfg, sandbox) as (engine, base):
        saver = FaceSaver(
            out_dir, cfg.near_duplicate_distance, journal, earlier, base, progress, len(names) * cfg.per_identity
        )
        if cfg.source == "urls":
            _run_url_list(cfg, saver)
        elif cfg.source == "folder":
            _import_folder(cfg, names, saver)
        else:
            _run_icrawler(engine, base, names, cfg, saver, stats)
            if lost := saver.account_for(stats.emitted, engine):
                log.warning("%d candidates were never downloaded; they are recorded as not_downloaded", lost)
        saver.close()
    report.seconds = time.perf_counter() - start
    if saver.disk_full is not None:
        raise FaceCrawlError(
            f"{saver.disk_full}; free some space and re-run: saved photos are kept and the journal resumes the rest"
        )
    rows = synthetic_columns(saver.rows(), sandbox if cfg.source == "sandbox" and not sandbox.photos else None)
    write_manifest(
        rows,
        manifest,
        saver.columns,
        {"crawl.faces": resolved(cfg), "sandbox": resolved(sandbox)},
        nullable_int=[*TRAIT_COLUMNS, "synthetic_index"],
    )
    Journal(journal_path(manifest)).remove()
    prune_unreferenced(out_dir, {out_dir / r["path"] for r in rows if r["status"] == "ok"})
    return _summarise(report, rows, names, cfg, engine, base, stats, saver.resumed)


def _summarise(
    report: FaceCrawlReport,
    rows: list[dict[str, Any]],
    names: list[str],
    cfg: CrawlFacesParams,
    engine: str,
    base: str,
    stats: engines.PageStats,
    resumed: int,
) -> FaceCrawlReport:
    report.candidates = len(rows)
    report.saved = sum(r["status"] == "ok" for r in rows)
    report.rejected = report.candidates - report.saved
    report.resumed = resumed
    report.rejected_by_reason = count_reasons(rows)
    report.saved_by_identity = {n: sum(r["status"] == "ok" and r["identity"] == n for r in rows) for n in names}
    report.short_identities = [n for n, k in report.saved_by_identity.items() if k < cfg.min_per_identity]
    for name in report.short_identities:
        log.warning(
            "identity %r has %d photos, below min_per_identity=%d",
            name,
            report.saved_by_identity[name],
            cfg.min_per_identity,
        )
    empty = [n for n, k in report.saved_by_identity.items() if k == 0]
    if engine not in ("urls", "folder") and names and not any(stats.pages.values()) and not resumed:
        raise FaceCrawlError(
            f"no search page of {engine} at {base} could be fetched or parsed; the network may be unreachable. "
            "Offline, use the sandbox: crawl.faces.source: sandbox (optionally sandbox.photos: <folder>)"
        )
    if empty:
        shown = ", ".join(repr(n) for n in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise FaceCrawlError(
            f"{len(empty)} identities got no photo from {cfg.source} ({base}): {shown}. "
            f"Check the names, or drop them from crawl.faces.identities; see {cfg.manifest}."
        )
    return report
