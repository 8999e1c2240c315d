"""Split a crawl across machines (`partition: i/n`) and merge the parts by content hash.

Part `i/n` of a crawl takes every n-th item of the run's deterministic list, starting at the i-th: the identities
for `crawl_faces` (a person's photos stay together, so duplicates are judged on one machine), the sampled trait
combinations for `crawl_avatars`. Every machine reads the same params apart from `partition`, so the parts are
disjoint and together hold every item. Files are named by their sha256, so merging is copying: a file that two parts
hold is the same bytes. After a merge, `dvc repro` with `partition: 0/1` reuses every merged row by its key (the
partition is not part of any key) and downloads nothing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pipeline.core.manifest import manifest_params, read_manifest, write_manifest
from pipeline.core.params import Params, resolved
from pipeline.core.schema import OK
from pipeline.core.storage import atomic_write_bytes

T = TypeVar("T")
Kind = Literal["faces", "avatars"]


class MergeError(ValueError):
    """A part cannot be merged: missing, damaged, or at odds with another part."""


def parse_partition(text: str) -> tuple[int, int]:
    """`"i/n"` as (i, n); params validation has already checked the form and that 0 <= i < n."""
    index, count = text.split("/")
    return int(index), int(count)


def take_part(items: Sequence[T], partition: str) -> list[T]:
    """This machine's share of a run's ordered items: every n-th, starting at the i-th."""
    index, count = parse_partition(partition)
    return list(items[index::count])


@dataclass(frozen=True)
class MergeReport:
    parts: int
    rows: int  # rows in the merged manifest
    copied: int  # files copied into the target folder
    present: int  # files the target already held with the same bytes


def _section(params: Params, kind: Kind) -> tuple[Path, Path, str]:
    cfg = params.crawl.faces if kind == "faces" else params.crawl.avatars
    return Path(cfg.manifest), Path(cfg.out_dir), "key"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merge_parts(kind: Kind, parts: Sequence[Path], params: Params, root: Path = Path(".")) -> MergeReport:
    """Merge the manifests and files of crawl parts (each a checkout that ran one partition) into `root`.

    Rows are taken from every part; an item (the manifest's `key`) that two parts both hold must have the same
    saved sha256, else the parts crawled different things and the merge stops before writing anything. Files are
    copied by content hash, verified on the way. The merged manifest is written last, atomically, with the params
    of `root` (`partition` as there, normally 0/1).

    Raises:
        MergeError: naming the part and the file or row at fault, and what to do.
    """
    if not parts:
        raise MergeError("no parts to merge; name the checkouts that crawled them")
    manifest_rel, files_rel, key = _section(params, kind)
    merged: dict[str, dict] = {}
    origin: dict[str, Path] = {}
    columns: list[str] | None = None
    nullable: list[str] = []
    for part in parts:
        manifest = part / manifest_rel
        if not manifest.is_file():
            raise MergeError(f"{part}: no {manifest_rel}; run `dvc repro crawl_{kind}` there first, or check the path")
        try:
            frame = read_manifest(manifest)
            manifest_params(manifest)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise MergeError(f"{manifest} cannot be read ({exc}); crawl that part again") from None
        if columns is None:
            columns = list(frame.columns)
            nullable = [name for name, dtype in frame.dtypes.items() if str(dtype) == "Int64"]
        if list(frame.columns) != columns:
            raise MergeError(f"{manifest} has other columns than the first part's; crawl every part with one version")
        for row in frame.to_dict("records"):
            item = str(row[key])
            earlier = merged.get(item)
            if earlier is not None and earlier["sha256"] != row["sha256"]:
                raise MergeError(
                    f"{item!r} is in {origin[item]} and {part} with different content; the parts must share every "
                    "param but `partition`"
                )
            if earlier is None or (row["status"] == OK and earlier["status"] != OK):
                merged[item], origin[item] = row, part
    target_files = root / files_rel
    copied = present = 0
    for item, row in merged.items():
        if row["status"] != OK:
            continue
        source, target = origin[item] / files_rel / str(row["path"]), target_files / str(row["path"])
        if not source.is_file() or _sha256(source) != row["sha256"]:
            raise MergeError(f"{source} is missing or does not match its manifest; run `dvc repro` in {origin[item]}")
        if target.is_file() and _sha256(target) == row["sha256"]:
            present += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, source.read_bytes())
        copied += 1
    section = "crawl.faces" if kind == "faces" else "crawl.avatars"
    cfg = params.crawl.faces if kind == "faces" else params.crawl.avatars
    write_manifest(
        merged.values(),
        root / manifest_rel,
        columns or [],
        {section: resolved(cfg), "sandbox": resolved(params.sandbox), "merged_from": [str(p) for p in parts]},
        nullable_int=nullable,
    )
    return MergeReport(len(parts), len(merged), copied, present)
