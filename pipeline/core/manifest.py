"""Parquet manifests, the resume journal, and the one resume -> journal -> write-manifest sequence of every stage."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.schema import OK, REJECTED, RETRIED_REASONS, check_rows
from pipeline.core.storage import TMP_MARK, atomic_write_bytes, remove_partials

PARAMS_META_KEY = b"img2caricature.params"
Row = dict[str, Any]


class Journal:
    """Append-only JSON lines, one per finished item, flushed at least every `flush_every` lines or 0.5 s.

    A `kill -9` loses at most the unflushed tail: those items are done again on resume (their files, written
    atomically before their line, are reused when they verify). `read` drops a torn last line. Appends from several
    threads are serialised; appends after `close` are refused, so a stopping run cannot write half a line.
    """

    def __init__(self, path: Path, flush_every: int = 32) -> None:
        self.path = path
        self.flush_every = flush_every
        self._handle: TextIO | None = None
        self._pending = 0
        self._last_flush = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def append(self, row: Mapping[str, Any]) -> bool:
        """Journal one row; False when the journal is already closed (the run is stopping)."""
        line = json.dumps(row, sort_keys=True, default=str) + "\n"
        with self._lock:
            if self._handle is None:
                return False
            self._handle.write(line)
            self._pending += 1
            now = time.monotonic()
            if self._pending >= self.flush_every or now - self._last_flush > 0.5:
                self._handle.flush()
                self._pending, self._last_flush = 0, now
        return True

    def read(self) -> list[Row]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn line from a killed writer
        return rows

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def journal_path(manifest: Path) -> Path:
    """The journal that sits beside a manifest while its stage runs."""
    return manifest.with_name(manifest.name + ".journal")


def read_manifest(path: Path) -> pd.DataFrame:
    """Load a manifest; an absent file is an empty frame."""
    if not path.exists():
        return pd.DataFrame()
    return pd.read_parquet(path)


def write_manifest(
    rows: Iterable[Mapping[str, Any]],
    path: Path,
    columns: list[str],
    params: Mapping[str, Any],
    nullable_int: list[str] | None = None,
) -> None:
    """Write rows as parquet atomically, with the resolved params in the file's metadata.

    Column order is fixed by `columns` so that identical runs give identical bytes; `nullable_int` columns keep
    integers with gaps (unknown values) as integers rather than floats.
    """
    frame = pd.DataFrame(list(rows), columns=columns)
    for column in nullable_int or []:
        frame[column] = frame[column].astype("Int64")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[PARAMS_META_KEY] = json.dumps(params, sort_keys=True).encode("utf-8")
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)  # readers can verify every page
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def manifest_params(path: Path) -> dict[str, Any]:
    """The resolved params a manifest was written with."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(PARAMS_META_KEY, b"{}"))


def count_reasons(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many rejected rows carry each reason, most common first (ties by name, so the order is stable)."""
    counts = Counter(str(r["reason"]) for r in rows if r.get("status") == REJECTED)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def prune_unreferenced(root: Path, keep: set[Path]) -> int:
    """Delete files under `root` that no manifest row points to (left by a larger earlier run); returns how many."""
    removed = 0
    if not root.exists():
        return 0
    for path in root.rglob("*"):
        if path.is_file() and path not in keep and TMP_MARK not in path.name:
            os.unlink(path)
            removed += 1
    return removed


class ResumableOutput:
    """One resuming output: a folder of files, the parquet manifest that lists them, and the journal beside it.

    Every resuming stage follows the same sequence, written only here:

    1. entering deletes temp files a killed run left, reads the earlier rows (the manifest's, then the journal's)
       and opens the journal;
    2. `reusable` hands back an earlier row only when its `result_key` equals the key the stage computes now and,
       for a saved row, its file still has the recorded size and sha256; `kept_bytes` hands back downloaded
       bytes whose `fetch_key` matches, so a changed param re-derives from them without fetching again;
    3. `record` journals each finished row, so `kill -9` or Ctrl-C loses at most the unflushed tail;
    4. `commit`, called only after the run succeeded, writes the manifest atomically, removes the journal and
       prunes the files no row keeps.

    A run that fails never reaches `commit`: the earlier manifest and every earlier file stay as they were, and
    the journal keeps this run's work for the next run.
    """

    def __init__(
        self,
        manifest: Path,
        files: Path,
        key: str,
        columns: list[str],
        hash_column: str = "sha256",
        nullable_int: list[str] | None = None,
    ) -> None:
        self.manifest, self.files, self.key, self.columns = manifest, files, key, columns
        self.hash_column, self.nullable_int = hash_column, nullable_int or []
        self.journal = Journal(journal_path(manifest))
        self._earlier: dict[str, list[Row]] = {}

    def __enter__(self) -> ResumableOutput:
        remove_partials(self.files)
        remove_partials(self.manifest.parent)
        # The journal is newer than the manifest, so its rows come first among an item's candidates.
        for row in [*self.journal.read(), *read_manifest(self.manifest).to_dict("records")]:
            if self.key in row:
                self._earlier.setdefault(str(row[self.key]), []).append(row)
        self.journal.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.journal.close()

    def candidates(self, item: str) -> list[Row]:
        """Earlier rows of one item, newest first."""
        return self._earlier.get(item, [])

    def verified(self, row: Mapping[str, Any]) -> bytes | None:
        """The bytes of a saved row's file when it still has its recorded sha256 (an emptied file fails)."""
        path = self.files / str(row.get("path") or "")
        expected = row.get(self.hash_column)
        if not row.get("path") or not expected or not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == expected else None

    def reusable(self, item: str, result_key: str, reuse_rejected: bool = False) -> Row | None:
        """The earlier row of `item` made under `result_key`, if its file verifies.

        A rejected row is reused only when `reuse_rejected` (a verdict on the item itself, like align's `no_face`)
        and its reason is not a moment's trouble (`schema.RETRIED_REASONS`: a missing file, a full disk). Crawls
        pass False: a rejected download is tried again, since the web may answer differently now.
        """
        for row in self.candidates(item):
            if row.get("result_key") != result_key:
                continue
            if row.get("status") == OK and self.verified(row) is not None:
                return row
            if reuse_rejected and row.get("status") == REJECTED and row.get("reason") not in RETRIED_REASONS:
                return row
        return None

    def kept_bytes(self, item: str, fetch_key: str) -> tuple[Row, bytes] | None:
        """Bytes an earlier run downloaded for `item` under the same `fetch_key`, with their row, if they verify."""
        for row in self.candidates(item):
            if row.get("status") == OK and row.get("fetch_key") == fetch_key:
                data = self.verified(row)
                if data is not None:
                    return row, data
        return None

    def record(self, row: Mapping[str, Any]) -> None:
        """Journal one finished row."""
        self.journal.append(row)

    def commit(self, rows: list[Row], params: Mapping[str, Any]) -> int:
        """Write the manifest, drop the journal and prune unreferenced files; returns how many files were pruned.

        Call it only after the run succeeded: this is the one place where earlier work is replaced.
        """
        check_rows(rows, str(self.manifest))
        write_manifest(rows, self.manifest, self.columns, params, self.nullable_int)
        self.journal.remove()
        return prune_unreferenced(self.files, {self.files / str(r["path"]) for r in rows if r["status"] == OK})
