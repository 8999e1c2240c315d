"""Where face candidates land: reuse by key, validation, content-hash storage per identity, dedupe, ground truth."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.core.manifest import ResumableOutput
from pipeline.core.params import SandboxParams
from pipeline.core.reuse import result_key
from pipeline.core.schema import OK, REJECTED, TRAIT_COLUMNS
from pipeline.core.storage import DiskFullError, safe_name, write_content
from pipeline.crawl.engines import PageProblem
from pipeline.crawl.validate import ImageLimits, ImageRejected, validate_image
from pipeline.sandbox.search import photo_ref

FACE_COLUMNS = [
    "key",
    "identity",
    "folder",
    "source",
    "rank",
    "url",
    "sha256",
    "path",
    "width",
    "height",
    "dhash",
    "status",
    "reason",
    "detail",
    "attempts",
    "http_status",
    "synthetic",
    "synthetic_index",
    "synthetic_kind",
    *TRAIT_COLUMNS,
    "fetch_key",
    "result_key",
]
SEARCH_REASONS = ("search_unreachable", "search_error", "search_unparsed")
# The params that decide whether downloaded bytes are kept; dedupe is decided again on every run.
VALIDATION_PARAMS = ("max_bytes", "max_pixels", "min_size")


def dhash256(data: bytes) -> str:
    """A 256-bit difference hash (16x16 gradient signs of a grey thumbnail) as 64 hex digits."""
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ImageRejected("corrupt", "OpenCV cannot decode the image for hashing")
    small = cv2.resize(grey, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return np.packbits(bits).tobytes().hex()


def hamming(a: str, b: str) -> int:
    """Differing bits between two hex hashes."""
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


@dataclass(frozen=True)
class FaceKeys:
    """How a face crawl names its results: what decides the bytes a URL serves, and what decides their verdict."""

    world: dict[str, Any]  # for the sandbox, what it serves (sandbox.server.served_content); the web: nothing
    validation: dict[str, Any]
    code: str

    def fetch_key(self, url: str, local: dict[str, Any] | None = None) -> str:
        return result_key(url, {**self.world, **(local or {})}, "")

    def result_key(self, fetch_key: str) -> str:
        return result_key(fetch_key, self.validation, self.code)


class FaceSaver:
    """Thread-safe sink for the downloader threads: every candidate URL ends as exactly one row.

    A candidate is reused when its result key matches, re-validated from the bytes an earlier run kept when only
    the validation params or the code changed, and downloaded otherwise.
    """

    def __init__(
        self,
        output: ResumableOutput,
        keys: FaceKeys,
        near_distance: int,
        base_url: str,
        progress: bool,
        expected: int,
    ) -> None:
        self.output, self.keys, self.near_distance, self.base_url = output, keys, near_distance, base_url
        self.out_dir = output.files
        self.lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}
        self.work = {"reused": 0, "rederived": 0, "fetched": 0, "bytes_fetched": 0}
        self.disk_full: DiskFullError | None = None
        self._stopped = False
        self.bar = tqdm(total=expected, desc="crawl faces", unit="img", disable=not progress, mininterval=1.0)

    @property
    def stopped(self) -> bool:
        return self._stopped or self.disk_full is not None

    def stop(self) -> None:
        """Tell the downloader threads to take no more work (Ctrl-C, a failure elsewhere)."""
        self._stopped = True

    def stable_url(self, url: str, source: str) -> str:
        # Sandbox URLs carry an ephemeral port; the manifest keeps them port-free so identical runs match.
        return url.replace(self.base_url, "sandbox:") if self.base_url and source == "sandbox" else url

    def base_row(
        self, identity: str, source: str, rank: int, url: str, local: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The row of a candidate before anything is known about it; `local` adds to its fetch key (file stats)."""
        stable_url = self.stable_url(url, source)
        row: dict[str, Any] = {c: None for c in FACE_COLUMNS}
        row.update(
            key=f"{identity}|{stable_url}",
            identity=identity,
            folder=safe_name(identity),
            source=source,
            rank=rank,
            url=stable_url,
            sha256="",
            path="",
            width=0,
            height=0,
            dhash="",
            status=REJECTED,
            reason="",
            detail="",
            attempts=0,
            http_status=0,
            synthetic=False,
        )
        row["fetch_key"] = self.keys.fetch_key(stable_url, local)
        row["result_key"] = self.keys.result_key(row["fetch_key"])
        return row

    def resume(self, base: dict[str, Any], limits: ImageLimits) -> bool:
        """Finish a candidate from earlier work: its row when the key matches, else its kept bytes re-validated.

        Returns False when it must be downloaded.
        """
        earlier = self.output.reusable(base["key"], base["result_key"])
        if earlier is not None:
            self._finish(dict(earlier, rank=base["rank"]), journal=False)
            with self.lock:
                self.work["reused"] += 1
            return True
        kept = self.output.kept_bytes(base["key"], base["fetch_key"])
        if kept is None:
            return False
        row, data = kept
        self.accept(dict(base, http_status=row["http_status"]), data, None, limits, int(row["attempts"]))
        with self.lock:
            self.work["rederived"] += 1
        return True

    def fetched(self, size: int) -> None:
        with self.lock:
            self.work["fetched"] += 1
            self.work["bytes_fetched"] += size

    def accept(
        self, base: dict[str, Any], data: bytes, content_type: str | None, limits: ImageLimits, attempts: int
    ) -> dict[str, Any]:
        """Validate, hash and store one downloaded body under its identity's folder."""
        http_status = int(base.get("http_status") or 200)
        try:
            image = validate_image(data, content_type, limits)
            dhash = dhash256(image.data)
        except ImageRejected as exc:
            return self.reject(base, exc.reason, exc.detail, attempts, http_status)
        path = self.out_dir / base["folder"] / f"{image.sha256}.{image.ext}"
        try:
            write_content(path, image.data)
        except DiskFullError as exc:
            self.disk_full = exc
            return self.reject(base, "disk_full", str(exc), attempts, http_status)
        row = dict(
            base,
            sha256=image.sha256,
            path=path.relative_to(self.out_dir).as_posix(),
            width=image.width,
            height=image.height,
            dhash=dhash,
            status=OK,
            attempts=attempts,
            http_status=http_status,
        )
        return self._finish(row)

    def reject(
        self, base: dict[str, Any], reason: str, detail: str, attempts: int, http_status: int | None
    ) -> dict[str, Any]:
        return self._finish(
            dict(base, status=REJECTED, reason=reason, detail=detail, attempts=attempts, http_status=http_status or 0)
        )

    def page_problem(self, problem: PageProblem, source: str) -> dict[str, Any]:
        """A search page that gave nothing usable is a row too, with the engine's words as its detail."""
        base = self.base_row(problem.identity, source, -1, problem.url)
        return self.reject(base, problem.reason, problem.words, 0, None)

    def _finish(self, row: dict[str, Any], journal: bool = True) -> dict[str, Any]:
        with self.lock:
            self._rows[row["key"]] = row
            self.bar.update(1)
        if journal:
            self.output.record(row)  # refused once the journal is closed: a stopping run writes nothing half-way
        return row

    def close(self) -> None:
        self.bar.close()

    def account_for(self, emitted: list[tuple[str, str, int]], source: str) -> int:
        """Give a row to every task the parser emitted but no downloader finished; returns how many."""
        missing = 0
        for identity, url, rank in emitted:
            base = self.base_row(identity, source, rank, url)
            if base["key"] not in self._rows:
                self.reject(
                    base, "not_downloaded", "the task never reached a downloader thread; a re-run retries it", 0, None
                )
                missing += 1
        return missing

    def rows(self) -> list[dict[str, Any]]:
        """All rows in a deterministic order, with duplicates decided by rank rather than by thread timing."""
        rows = sorted(self._rows.values(), key=lambda r: (r["folder"], r["rank"], r["url"]))
        return mark_duplicates(rows, self.near_distance)


def mark_duplicates(rows: list[dict[str, Any]], near_distance: int) -> list[dict[str, Any]]:
    """Keep the best-ranked copy: exact duplicates by sha256 anywhere, near-duplicates by dHash within an identity."""
    first_by_sha: dict[str, dict[str, Any]] = {}
    kept_hashes: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if row["status"] != OK:
            continue
        other = first_by_sha.get(row["sha256"])
        if other is not None:
            row.update(
                status=REJECTED, reason="duplicate", detail=f"same bytes as {other['url']} ({other['identity']})"
            )
            continue
        first_by_sha[row["sha256"]] = row
        near = next(
            (u for h, u in kept_hashes.get(row["folder"], []) if hamming(h, row["dhash"]) <= near_distance), None
        )
        if near is not None:
            row.update(status=REJECTED, reason="near_duplicate", detail=f"dHash within {near_distance} bits of {near}")
            continue
        kept_hashes.setdefault(row["folder"], []).append((row["dhash"], row["url"]))
    return rows


def synthetic_columns(rows: list[dict[str, Any]], sandbox: SandboxParams | None) -> list[dict[str, Any]]:
    """Fill the ground truth of synthetic sandbox photos: the identity's traits and the photo's kind.

    Raises:
        ValueError: for a candidate URL that the sandbox's photo URL grammar does not know (a bug, never skipped).
    """
    if sandbox is None:
        return rows
    from pipeline.sandbox.photo import identity_spec, photo_kind

    for row in rows:
        if row["reason"] in SEARCH_REASONS:
            continue  # a search page, not a photo
        ref = photo_ref(row["url"])
        if ref is None:
            raise ValueError(f"{row['url']} is no photo URL that pipeline.sandbox.search.photo_ref can parse")
        spec = identity_spec(ref.identity, sandbox.seed)
        kind = None if ref.variant == "gone" else photo_kind(ref.identity, ref.index, sandbox.seed)
        row.update(synthetic=True, synthetic_index=ref.index, synthetic_kind=kind, gender=spec.gender, style=spec.style)
        row.update(spec.trait_dict)
    return rows
