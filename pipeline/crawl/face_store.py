"""Where face candidates land: validation, content-hash storage per identity, dedupe, rows and ground truth."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.core.manifest import Journal
from pipeline.core.params import SandboxParams
from pipeline.core.storage import DiskFullError, atomic_write_bytes, safe_name
from pipeline.crawl.validate import ImageLimits, ImageRejected, validate_image
from pipeline.sandbox import traits

TRAIT_COLUMNS = ["gender", "style", *sorted(traits.TRAIT_KEYS)]
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
]
DEDUPE_REASONS = ("duplicate", "near_duplicate")


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


class FaceSaver:
    """Thread-safe sink for the downloader threads: every candidate URL ends as exactly one row."""

    def __init__(
        self,
        out_dir: Path,
        near_distance: int,
        journal: Journal,
        earlier: dict[str, dict[str, Any]],
        base_url: str,
        progress: bool,
        expected: int,
    ) -> None:
        self.out_dir, self.near_distance, self.journal, self.base_url = out_dir, near_distance, journal, base_url
        self.columns = FACE_COLUMNS
        self.lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}
        self._earlier = {
            k: r for k, r in earlier.items() if r.get("status") == "ok" and (out_dir / str(r["path"])).is_file()
        }
        self.resumed = 0
        self.disk_full: DiskFullError | None = None
        self.bar = tqdm(total=expected, desc="crawl faces", unit="img", disable=not progress, mininterval=1.0)

    @property
    def stopped(self) -> bool:
        return self.disk_full is not None

    def base_row(self, identity: str, source: str, rank: int, url: str) -> dict[str, Any]:
        # Sandbox URLs carry an ephemeral port; the manifest keeps them port-free so identical runs match.
        stable_url = url.replace(self.base_url, "sandbox:") if self.base_url and source == "sandbox" else url
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
            status="failed",
            reason="",
            detail="",
            attempts=0,
            http_status=0,
            synthetic=False,
        )
        return row

    def resume(self, base: dict[str, Any]) -> bool:
        """Reuse the row of a URL saved by an earlier run; True when there is one."""
        earlier = self._earlier.get(base["key"])
        if earlier is None:
            return False
        self._finish(dict(earlier, rank=base["rank"]), journal=False)
        with self.lock:
            self.resumed += 1
        return True

    def accept(
        self, base: dict[str, Any], data: bytes, content_type: str | None, limits: ImageLimits, attempts: int
    ) -> dict[str, Any]:
        """Validate, hash and store one downloaded body under its identity's folder."""
        try:
            image = validate_image(data, content_type, limits)
            dhash = dhash256(image.data)
        except ImageRejected as exc:
            return self.reject(base, exc.reason, exc.detail, attempts, 200)
        path = self.out_dir / base["folder"] / f"{image.sha256}.{image.ext}"
        try:
            if not path.exists():
                atomic_write_bytes(path, image.data)
        except DiskFullError as exc:
            self.disk_full = exc
            return self.reject(base, "disk_full", str(exc), attempts, 200)
        row = dict(
            base,
            sha256=image.sha256,
            path=path.relative_to(self.out_dir).as_posix(),
            width=image.width,
            height=image.height,
            dhash=dhash,
            status="ok",
            attempts=attempts,
            http_status=200,
        )
        return self._finish(row)

    def reject(
        self, base: dict[str, Any], reason: str, detail: str, attempts: int, http_status: int | None
    ) -> dict[str, Any]:
        return self._finish(
            dict(base, status="failed", reason=reason, detail=detail, attempts=attempts, http_status=http_status or 0)
        )

    def _finish(self, row: dict[str, Any], journal: bool = True) -> dict[str, Any]:
        with self.lock:
            self._rows[row["key"]] = row
            if journal:
                self.journal.append(row)
            self.bar.update(1)
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
        if row["status"] != "ok":
            continue
        other = first_by_sha.get(row["sha256"])
        if other is not None:
            row.update(
                status="failed", reason="duplicate", detail=f"same bytes as {other['url']} ({other['identity']})"
            )
            continue
        first_by_sha[row["sha256"]] = row
        near = next(
            (u for h, u in kept_hashes.get(row["folder"], []) if hamming(h, row["dhash"]) <= near_distance), None
        )
        if near is not None:
            row.update(status="failed", reason="near_duplicate", detail=f"dHash within {near_distance} bits of {near}")
            continue
        kept_hashes.setdefault(row["folder"], []).append((row["dhash"], row["url"]))
    return rows


_PHOTO_URL = re.compile(r"/photos/([^/]+)/(\d+)(?:-copy\d+|-resized\d+)?\.jpg")


def synthetic_columns(rows: list[dict[str, Any]], sandbox: SandboxParams | None) -> list[dict[str, Any]]:
    """Fill the ground truth of synthetic sandbox photos: the identity's traits and the photo's kind."""
    if sandbox is None:
        return rows
    from pipeline.sandbox.photo import identity_spec, photo_kind

    for row in rows:
        match = _PHOTO_URL.search(row["url"])
        if not match:
            continue
        slug, index = match.group(1), int(match.group(2))
        spec = identity_spec(slug, sandbox.seed)
        row.update(
            synthetic=True,
            synthetic_index=index,
            synthetic_kind=photo_kind(slug, index, sandbox.seed),
            gender=spec.gender,
            style=spec.style,
            **spec.trait_dict,
        )
    return rows
