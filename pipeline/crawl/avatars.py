"""The async avatar crawler: read the catalogue, sample trait combinations, fetch renders, keep a resumable manifest."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from pipeline.core import traits
from pipeline.core.manifest import ResumableOutput, count_reasons
from pipeline.core.params import CrawlAvatarsParams, SandboxParams, resolved
from pipeline.core.reuse import code_version, result_key
from pipeline.core.schema import OK, REJECTED
from pipeline.core.storage import DiskFullError, content_path, write_content
from pipeline.crawl.fetch import USER_AGENT, FetchOutcome, RetryPolicy, fetch_image, fetch_json
from pipeline.crawl.partition import take_part
from pipeline.crawl.validate import ImageLimits, ImageRejected, validate_image
from pipeline.sandbox.app import ASSETS_PATH, preview_url
from pipeline.sandbox.server import SandboxServer, served_content

BASE_COLUMNS = ["key", "gender", "style", "scale", "rotation"]
RESULT_COLUMNS = ["url", "sha256", "path", "width", "height", "status", "reason", "detail", "attempts", "http_status"]
KEY_COLUMNS = ["fetch_key", "result_key"]
MANIFEST_COLUMNS = BASE_COLUMNS + sorted(traits.TRAIT_KEYS) + RESULT_COLUMNS + KEY_COLUMNS
# The params that decide whether downloaded bytes are kept; the rest choose what to fetch, or how.
VALIDATION_PARAMS = ("max_bytes", "max_pixels", "min_size")
IO_THREADS = 4  # decode, hash and write off the event loop (they release the GIL)
SANDBOX_URL = "sandbox:"  # the manifest's stand-in for the in-process sandbox's ephemeral base URL


class CrawlError(RuntimeError):
    """The crawl could not do its job at all (nothing saved, catalogue unreadable, disk full)."""


@dataclass
class CrawlReport:
    """The manifest rows a crawl left, and what this run did to get there."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    work: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(r["status"] == OK for r in self.rows)

    @property
    def rejected(self) -> int:
        return len(self.rows) - self.kept

    def metrics(self) -> dict[str, Any]:
        """The state of the output, for metrics/crawl_avatars.json."""
        return {"avatars": {"kept": self.kept, "rejected": self.rejected}}

    def details(self) -> dict[str, Any]:
        return {"requested": len(self.rows), "rejected_by_reason": count_reasons(self.rows)}


@contextlib.contextmanager
def avatar_endpoint(endpoint: str, sandbox: SandboxParams) -> Iterator[str]:
    """Yield the base URL to crawl: the in-process sandbox for `sandbox`, else the URL itself."""
    if endpoint != "sandbox":
        yield endpoint
        return
    with SandboxServer(sandbox) as server:
        yield server.url


def sample(cfg: CrawlAvatarsParams, catalogue: traits.Catalogue) -> list[traits.AvatarSpec]:
    """The avatars to fetch: `cfg.count` distinct trait combinations drawn with `cfg.trait_presence`.

    Raises:
        CrawlError: when the catalogue cannot serve the params (a trait it lacks, more avatars than it can express).
    """
    try:
        presence = traits.resolve_presence(cfg.trait_presence)
        genders, styles = tuple(cfg.genders), tuple(cfg.styles)
        return traits.sample_specs(catalogue, cfg.count, cfg.seed, genders, styles, cfg.scale, presence)
    except ValueError as exc:
        raise CrawlError(
            f"crawl.avatars (count {cfg.count}, trait_presence {cfg.trait_presence!r}) does not fit the catalogue of "
            f"{cfg.endpoint}: {exc}. Change those params; nothing saved earlier was changed."
        ) from None


@dataclass(frozen=True)
class Keys:
    """How this run names results: what decides the bytes a URL serves, and what decides their verdict."""

    world: dict[str, Any]  # for the sandbox, what it serves; a real endpoint is only its URLs
    validation: dict[str, Any]
    code: str

    def fetch_key(self, url: str) -> str:
        return result_key(url, self.world, "")

    def result_key(self, fetch_key: str) -> str:
        return result_key(fetch_key, self.validation, self.code)


def run_keys(cfg: CrawlAvatarsParams, sandbox: SandboxParams) -> Keys:
    world = served_content(sandbox, "avatars") if cfg.endpoint == "sandbox" else {}
    validation = {name: getattr(cfg, name) for name in VALIDATION_PARAMS}
    return Keys(world, validation, code_version("pipeline.crawl.avatars"))


def _row(spec: traits.AvatarSpec, url: str, keys: Keys) -> dict[str, Any]:
    row: dict[str, Any] = {"key": spec.key(), "gender": spec.gender, "style": spec.style, "scale": spec.scale}
    row["rotation"] = spec.rotation
    row.update({key: -1 for key in traits.TRAIT_KEYS})
    row.update(spec.trait_dict)
    row.update(url=url, sha256="", path="", width=0, height=0, attempts=0, http_status=0, detail="")
    row["fetch_key"] = keys.fetch_key(url)
    row["result_key"] = keys.result_key(row["fetch_key"])
    return row


def _saved(row: dict[str, Any], image: Any, out_dir: Path) -> dict[str, Any]:
    """Store a valid image under its content hash and fill in the row."""
    path = content_path(out_dir, image.sha256, image.ext)
    write_content(path, image.data)
    relative = path.relative_to(out_dir).as_posix()
    return dict(row, sha256=image.sha256, path=relative, width=image.width, height=image.height, status=OK, reason="")


def _record(row: dict[str, Any], outcome: FetchOutcome, out_dir: Path) -> dict[str, Any]:
    """The row of one fetch: saved under its content hash, or rejected with the fetch's reason."""
    row = dict(row, attempts=outcome.attempts, http_status=outcome.http_status or 0)
    if outcome.image is None:
        return dict(row, status=REJECTED, reason=outcome.reason, detail=outcome.detail)
    return _saved(row, outcome.image, out_dir)


def _rederive(row: dict[str, Any], kept: dict[str, Any], data: bytes, limits: ImageLimits, out_dir: Path) -> dict:
    """Validate bytes an earlier run downloaded against this run's limits, as a fresh download would be."""
    row = dict(row, attempts=kept["attempts"], http_status=kept["http_status"])
    try:
        return _saved(row, validate_image(data, None, limits), out_dir)
    except ImageRejected as exc:
        return dict(row, status=REJECTED, reason=exc.reason, detail=exc.detail)


async def _crawl(
    cfg: CrawlAvatarsParams, sandbox: SandboxParams, base: str, progress: bool, report: CrawlReport
) -> list[dict[str, Any]]:
    out_dir = Path(cfg.out_dir)
    policy = RetryPolicy(cfg.retries, cfg.backoff_s, cfg.backoff_max_s)
    limits = ImageLimits(cfg.max_bytes, cfg.max_pixels, cfg.min_size, frozenset({"png", "jpg", "webp"}))
    rng = random.Random(cfg.seed)
    stable = SANDBOX_URL if cfg.endpoint == "sandbox" else cfg.endpoint
    keys = run_keys(cfg, sandbox)
    connector = aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}) as session:
        try:
            body = await fetch_json(session, base + ASSETS_PATH, policy, cfg.timeout_s, rng)
            catalogue = traits.parse_catalogue(body)
        except (ConnectionError, ValueError) as exc:
            raise CrawlError(
                f"cannot read the avatar catalogue of {base}: {exc}. Nothing saved earlier was changed."
            ) from None
        specs = take_part(sample(cfg, catalogue), cfg.partition)
        rows = {spec.key(): _row(spec, preview_url(stable, spec), keys) for spec in specs}
        output = ResumableOutput(Path(cfg.manifest), out_dir, "key", MANIFEST_COLUMNS)
        with output, ThreadPoolExecutor(IO_THREADS, "crawl-io") as pool:
            pending, rederive = [], []
            for key, row in rows.items():
                if (earlier := output.reusable(key, row["result_key"])) is not None:
                    rows[key] = dict(earlier, url=row["url"])
                elif (kept := output.kept_bytes(key, row["fetch_key"])) is not None:
                    rederive.append((key, *kept))
                else:
                    pending.append(key)
            report.work.update(reused=len(rows) - len(pending) - len(rederive), rederived=len(rederive))
            futures = {
                key: pool.submit(_rederive, rows[key], kept, data, limits, out_dir) for key, kept, data in rederive
            }
            for key, future in futures.items():
                rows[key] = future.result()
                output.record(rows[key])
            report.work.update(fetched=len(pending), bytes_fetched=0)
            fetch = Fetch(session, base, stable, limits, policy, rng, pool, output)
            await _fetch_all(rows, pending, fetch, cfg, report.work, progress)
            ordered = [rows[spec.key()] for spec in specs]
            disk_full = [r for r in ordered if r.get("reason") == "disk_full"]
            if disk_full:
                raise CrawlError(
                    f"{disk_full[0]['detail']}; free some space and re-run: the avatars saved so far are kept and "
                    "the next run resumes from them"
                )
            report.rows = ordered
            if report.kept == 0:
                reasons = count_reasons(ordered)
                top = next(iter(reasons), "unknown")
                example = next(r["detail"] for r in ordered if r["reason"] == top)
                raise CrawlError(
                    f"all {len(ordered)} avatar requests to {cfg.endpoint} ({base}) failed; most common reason: "
                    f"{top} ({reasons.get(top, 0)}x), e.g. {example}. Nothing saved earlier was changed."
                )
        report.work["pruned"] = output.commit(ordered, {"crawl.avatars": resolved(cfg), "sandbox": resolved(sandbox)})
    return ordered


@dataclass(frozen=True)
class Fetch:
    """What every fetch of one crawl shares."""

    session: aiohttp.ClientSession
    base: str  # the live base URL
    stable: str  # what the manifest writes instead of it
    limits: ImageLimits
    policy: RetryPolicy
    rng: random.Random
    pool: ThreadPoolExecutor
    output: ResumableOutput


async def _fetch_all(
    rows: dict[str, dict[str, Any]],
    pending: list[str],
    fetch: Fetch,
    cfg: CrawlAvatarsParams,
    work: dict[str, Any],
    progress: bool,
) -> None:
    """Fetch every pending avatar with `cfg.concurrency` requests in flight; stops early when the disk is full."""
    out_dir = Path(cfg.out_dir)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in pending:
        queue.put_nowait(key)
    disk_full: list[DiskFullError] = []
    bar = tqdm(
        total=len(rows),
        initial=len(rows) - len(pending),
        desc="crawl avatars",
        unit="img",
        disable=not progress,
        mininterval=1.0,
    )
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while not disk_full:
            try:
                key = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            url = fetch.base + rows[key]["url"].removeprefix(fetch.stable)
            outcome = await fetch_image(
                fetch.session, url, fetch.limits, fetch.policy, cfg.timeout_s, fetch.rng, fetch.pool
            )
            try:
                rows[key] = await loop.run_in_executor(fetch.pool, _record, rows[key], outcome, out_dir)
            except DiskFullError as exc:
                disk_full.append(exc)
                rows[key] = dict(rows[key], status=REJECTED, reason="disk_full", detail=str(exc))
            fetch.output.record(rows[key])
            work["bytes_fetched"] += len(outcome.image.data) if outcome.image else 0
            bar.update(1)

    await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, max(1, len(pending))))))
    bar.close()
    for key in pending:
        if "status" not in rows[key]:  # never attempted because the disk filled up
            message = f"not attempted: {disk_full[0]}" if disk_full else "not attempted"
            rows[key] = dict(rows[key], status=REJECTED, reason="disk_full", detail=message)


def crawl_avatars(
    cfg: CrawlAvatarsParams, sandbox: SandboxParams, progress: bool = True, work: dict[str, Any] | None = None
) -> CrawlReport:
    """Run the whole avatar crawl and write the manifest; resumable after any interruption.

    An earlier avatar is reused when its result key matches; its bytes are re-validated without a download when
    only the validation params or the code changed. A run that fails leaves the earlier manifest and files alone.

    `work` (a run log's) receives this run's counts, also when the crawl fails.

    Raises:
        CrawlError: when the catalogue cannot be read, the disk fills up, or not a single avatar was saved.
    """
    report = CrawlReport(work=work if work is not None else {})
    with avatar_endpoint(cfg.endpoint, sandbox) as base:
        asyncio.run(_crawl(cfg, sandbox, base, progress, report))
    return report
