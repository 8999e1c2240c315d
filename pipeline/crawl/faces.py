"""Face photo crawl: icrawler's Feeder -> Parser -> Downloader path into a deduplicated, resumable manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icrawler import Crawler, ImageDownloader

from pipeline.core.manifest import ResumableOutput, count_reasons
from pipeline.core.params import CrawlFacesParams, SandboxParams, resolved
from pipeline.core.reuse import code_version
from pipeline.core.schema import OK, TRAIT_COLUMNS
from pipeline.core.storage import safe_name
from pipeline.crawl import engines
from pipeline.crawl.face_store import FACE_COLUMNS, VALIDATION_PARAMS, FaceKeys, FaceSaver, synthetic_columns
from pipeline.crawl.fetch import USER_AGENT, FetchFailed, RetryPolicy, fetch_bytes
from pipeline.crawl.partition import take_part
from pipeline.crawl.validate import ImageLimits
from pipeline.sandbox.search import PHOTO_EXTS, folder_listing
from pipeline.sandbox.server import SandboxServer, served_content

log = logging.getLogger(__name__)


class FaceCrawlError(RuntimeError):
    """The face crawl cannot give a usable result (an identity with no photos, no network, a full disk)."""


@dataclass
class FaceCrawlReport:
    """The manifest rows a face crawl left, and what this run did to get there."""

    names: list[str]
    min_per_identity: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    work: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(r["status"] == OK for r in self.rows)

    @property
    def kept_by_identity(self) -> dict[str, int]:
        return {n: sum(r["status"] == OK and r["identity"] == n for r in self.rows) for n in self.names}

    @property
    def short_identities(self) -> list[str]:
        return [n for n, k in self.kept_by_identity.items() if k < self.min_per_identity]

    def metrics(self) -> dict[str, Any]:
        """The state of the output, for metrics/crawl_faces.json."""
        identities = sum(k > 0 for k in self.kept_by_identity.values())
        return {"faces": {"kept": self.kept, "rejected": len(self.rows) - self.kept}, "identities": identities}

    def details(self) -> dict[str, Any]:
        return {
            "candidates": len(self.rows),
            "rejected_by_reason": count_reasons(self.rows),
            "kept_by_identity": {safe_name(n): k for n, k in self.kept_by_identity.items()},
            "short_identities": self.short_identities,
            "min_per_identity": self.min_per_identity,
        }


QUEUE_POLL_S = 0.1  # how long an idle icrawler thread waits on its queue before it checks whether to exit


class PromptCrawler(Crawler):
    """icrawler's Crawler, checking its threads every 50 ms: icrawler's one-second poll between the feeder, parser
    and downloader exits cost every crawl two idle seconds."""

    def crawl(
        self,
        feeder_kwargs: dict[str, Any] | None = None,
        parser_kwargs: dict[str, Any] | None = None,
        downloader_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.signal.reset()
        self.feeder.start(**(feeder_kwargs or {}))
        self.parser.start(**(parser_kwargs or {}))
        self.downloader.start(**(downloader_kwargs or {}))
        while self.downloader.is_alive():
            if not self.feeder.is_alive():
                self.signal.set(feeder_exited=True)
            if not self.parser.is_alive():
                self.signal.set(parser_exited=True)
            time.sleep(0.05)


class ManifestDownloader(ImageDownloader):
    """icrawler's downloader, writing through FaceSaver: validation, dedupe, atomic storage and one row per URL."""

    def __init__(self, *args: Any, saver: FaceSaver, cfg: CrawlFacesParams, source: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saver, self.cfg, self.source = saver, cfg, source
        self.policy = RetryPolicy(cfg.retries, cfg.backoff_s, cfg.backoff_max_s)
        self.limits = ImageLimits(cfg.max_bytes, cfg.max_pixels, cfg.min_size)

    def take(self, task: dict[str, Any]) -> None:
        """Finish one candidate: reuse, re-validate kept bytes, or download; every path ends in one row."""
        base = self.saver.base_row(task["identity"], self.source, int(task.get("rank", 0)), task["file_url"])
        if self.saver.stopped or self.saver.resume(base, self.limits):
            return
        try:
            fetched = fetch_bytes(
                self.session, task["file_url"], self.limits.max_bytes, self.policy, self.cfg.timeout_s
            )
        except FetchFailed as failed:
            self.saver.reject(base, failed.reason, failed.detail, failed.attempts, failed.http_status)
            return
        self.saver.fetched(len(fetched.data))
        self.saver.accept(base, fetched.data, fetched.content_type, self.limits, fetched.attempts)

    def worker_exec(self, max_num: int, queue_timeout: float) -> None:  # called with our downloader_kwargs
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
                self.take(task)
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
    crawler = PromptCrawler(
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
        parser_kwargs={"queue_timeout": QUEUE_POLL_S, "req_timeout": cfg.timeout_s, "max_retry": cfg.retries + 1},
        downloader_kwargs={"max_num": 0, "queue_timeout": QUEUE_POLL_S},
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
    crawler = PromptCrawler(
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
        parser_kwargs={"queue_timeout": QUEUE_POLL_S},
        downloader_kwargs={"max_num": 0, "queue_timeout": QUEUE_POLL_S},
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
            stat = path.stat()  # a file replaced in place gets a new fetch key: its bytes are read again
            local = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            base = saver.base_row(name, "folder", rank, path.resolve().as_uri(), local)
            if not saver.resume(base, limits):
                saver.fetched(stat.st_size)
                saver.accept(base, path.read_bytes(), None, limits, 1)


def face_keys(cfg: CrawlFacesParams, sandbox: SandboxParams) -> FaceKeys:
    """The keys of this run: the sandbox's content when it serves the photos, the limits, and the code."""
    world = served_content(sandbox, "photos") if cfg.source == "sandbox" else {}
    validation = {name: getattr(cfg, name) for name in VALIDATION_PARAMS}
    return FaceKeys(world, validation, code_version("pipeline.crawl.faces"))


def crawl_faces(
    cfg: CrawlFacesParams, sandbox: SandboxParams, progress: bool = True, work: dict[str, Any] | None = None
) -> FaceCrawlReport:
    """Crawl photos of every identity and write the manifest; resumable after any interruption.

    A run that fails (no engine, a search page without a usable answer, an identity without a photo, a full disk,
    Ctrl-C) writes no manifest and deletes nothing: the earlier manifest and photos stay, and the journal keeps
    this run's rows for the next one. `work` (a run log's) receives this run's counts, also when it fails.

    Raises:
        FaceCrawlError: naming what failed, in the engine's own words where it answered.
    """
    names = take_part(resolve_identities(cfg, sandbox), cfg.partition)
    if not names:
        raise FaceCrawlError(f"crawl.faces.partition {cfg.partition} holds no identity; split fewer ways")
    report = FaceCrawlReport(names, cfg.min_per_identity, work=work if work is not None else {})
    stats = engines.PageStats()
    output = ResumableOutput(
        Path(cfg.manifest), Path(cfg.out_dir), "key", FACE_COLUMNS, nullable_int=[*TRAIT_COLUMNS, "synthetic_index"]
    )
    with output, search_host(cfg, sandbox) as (engine, base):
        keys = face_keys(cfg, sandbox)
        saver = FaceSaver(output, keys, cfg.near_duplicate_distance, base, progress, len(names) * cfg.per_identity)
        try:
            if cfg.source == "urls":
                _run_url_list(cfg, saver)
            elif cfg.source == "folder":
                _import_folder(cfg, names, saver)
            else:
                _run_icrawler(engine, base, names, cfg, saver, stats)
                if lost := saver.account_for(stats.emitted, engine):
                    log.warning("%d candidates were never downloaded; they are recorded as not_downloaded", lost)
        finally:
            saver.stop()  # downloader threads still running (Ctrl-C) take no more work
            saver.close()
            report.work.update(saver.work)
        for problem in stats.problems:
            saver.page_problem(problem, engine)
        sandbox_truth = sandbox if cfg.source == "sandbox" and not sandbox.photos else None
        report.rows = synthetic_columns(saver.rows(), sandbox_truth)
        report.work["search_pages"] = sum(stats.pages.values())
        report.work["search_problems"] = [dataclasses.asdict(problem) for problem in stats.problems]
        _check(report, cfg, engine, base, stats, saver)
        report.work["pruned"] = output.commit(report.rows, {"crawl.faces": resolved(cfg), "sandbox": resolved(sandbox)})
    for name in report.short_identities:
        log.warning(
            "identity %r has %d photos, below min_per_identity=%d",
            name,
            report.kept_by_identity[name],
            cfg.min_per_identity,
        )
    return report


def _check(
    report: FaceCrawlReport,
    cfg: CrawlFacesParams,
    engine: str,
    base: str,
    stats: engines.PageStats,
    saver: FaceSaver,
) -> None:
    """Raise for a run whose result must not replace the earlier one, saying why in the words that were given."""
    keep = "Nothing saved earlier was changed or deleted"
    if saver.disk_full is not None:
        raise FaceCrawlError(f"{saver.disk_full}; free some space and re-run: the photos saved so far are kept")
    searched = engine not in ("urls", "folder")
    problems = stats.problems
    if searched and report.names and stats.answered == 0:
        said = f": {problems[0].words}" if problems else ""
        raise FaceCrawlError(
            f"no search page of {engine} at {base} answered{said}; the network may be unreachable. {keep}. "
            "Offline, use the sandbox: crawl.faces.source: sandbox (optionally sandbox.photos: <folder>)"
        )
    if problems:
        shown = "; ".join(f"{p.identity!r}: {p.reason}: {p.words}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise FaceCrawlError(
            f"{len(problems)} search pages of {engine} at {base} gave no usable answer, so this run cannot tell "
            f"which earlier photos it would keep. {shown}{more}. {keep}; re-run when the engine answers."
        )
    empty = [n for n, k in report.kept_by_identity.items() if k == 0]
    if empty:
        shown = ", ".join(f"{n!r} ({_why_empty(n, report.rows, stats)})" for n in empty[:10])
        raise FaceCrawlError(
            f"{len(empty)} identities got no photo from {cfg.source} ({base}): {shown}"
            + (" ..." if len(empty) > 10 else "")
            + f". Check the names, or drop them from crawl.faces.identities. {keep}."
        )


def _why_empty(name: str, rows: list[dict[str, Any]], stats: engines.PageStats) -> str:
    reasons = count_reasons(r for r in rows if r["identity"] == name)
    if reasons:
        return "candidates rejected: " + ", ".join(f"{k} {v}x" for k, v in reasons.items())
    if name in stats.no_results:
        said = stats.no_results[name]
        return "its search listed no photo" + (f"; the page said: {said!r}" if said else "")
    return "no candidate"
