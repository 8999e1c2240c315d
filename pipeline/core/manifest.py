"""Parquet manifests (one row per attempted item) and the append-only journal that lets a killed run resume."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.storage import TMP_MARK, atomic_write_bytes

PARAMS_META_KEY = b"img2caricature.params"


class Journal:
    """Append-only JSON lines, one per finished item, flushed at least every `flush_every` lines or 0.5 s.

    A `kill -9` loses at most the unflushed tail: those items are fetched again on resume (their files, written
    atomically before their line, are reused). `read` drops a torn last line.
    """

    def __init__(self, path: Path, flush_every: int = 32) -> None:
        self.path = path
        self.flush_every = flush_every
        self._handle: TextIO | None = None
        self._pending = 0
        self._last_flush = 0.0

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def append(self, row: Mapping[str, Any]) -> None:
        assert self._handle is not None, "use Journal as a context manager"
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self.flush_every or now - self._last_flush > 0.5:
            self._handle.flush()
            self._pending, self._last_flush = 0, now

    def read(self) -> list[dict[str, Any]]:
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


def previous_rows(manifest: Path, key: str) -> dict[str, dict[str, Any]]:
    """Rows from the last manifest and from a journal left by a killed run, keyed by `key`; the journal wins."""
    rows: dict[str, dict[str, Any]] = {}
    frame = read_manifest(manifest)
    if not frame.empty and key in frame.columns:
        for record in frame.to_dict("records"):
            rows[str(record[key])] = record
    for record in Journal(journal_path(manifest)).read():
        rows[str(record[key])] = record
    return rows


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
    """How many failed rows carry each reason, most common first."""
    counts = Counter(str(r["reason"]) for r in rows if r.get("status") != "ok")
    return dict(counts.most_common())


def prune_unreferenced(root: Path, keep: set[Path]) -> int:
    """Delete files under `root` that no manifest row points to (left by a larger earlier crawl); returns how many."""
    removed = 0
    if not root.exists():
        return 0
    for path in root.rglob("*"):
        if path.is_file() and path not in keep and TMP_MARK not in path.name:
            os.unlink(path)
            removed += 1
    return removed
