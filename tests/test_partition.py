"""A crawl split across machines (`partition: i/n`) and merged by content hash equals the crawl done in one go."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.params import ParamsError, parse_params
from pipeline.crawl.partition import MergeError, merge_parts, take_part
from stages import crawl_avatars, crawl_faces

REPO = Path(__file__).resolve().parents[1]
STAGES = {"avatars": crawl_avatars, "faces": crawl_faces}


def small_params(partition: str) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    fetch = dict(retries=2, backoff_s=0.01, backoff_max_s=0.05, partition=partition)
    raw["crawl"]["avatars"].update(count=10, concurrency=4, **fetch)
    names = ["Avery Quinn", "Blake Moreno", "Casey Lindqvist"]
    raw["crawl"]["faces"].update(identities=names, per_identity=4, min_per_identity=1, concurrency=2, **fetch)
    return raw


@contextlib.contextmanager
def inside(root: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


def crawl(root: Path, kind: str, partition: str) -> dict[str, Any]:
    """Run one crawl stage in `root` with this partition; returns its run log."""
    root.mkdir(parents=True, exist_ok=True)
    raw = small_params(partition)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with inside(root):
        STAGES[kind].main(parse_params(raw))
    return json.loads((root / f"reports/runs/crawl_{kind}.json").read_text())


def files(root: Path, kind: str) -> dict[str, bytes]:
    folder = root / f"data/raw/{kind}"
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    found[f"data/raw/{kind}.parquet"] = (root / f"data/raw/{kind}.parquet").read_bytes()
    found[f"metrics/crawl_{kind}.json"] = (root / f"metrics/crawl_{kind}.json").read_bytes()
    return found


def test_parts_are_disjoint_and_together_hold_every_item() -> None:
    items = list(range(17))
    parts = [take_part(items, f"{i}/4") for i in range(4)]
    assert sorted(sum(parts, [])) == items
    assert all(len(p) in (4, 5) for p in parts)
    assert take_part(items, "0/1") == items


@pytest.mark.parametrize("bad", ["1/1", "2/1", "0/0", "a/2", "1-2", "-1/2"])
def test_a_bad_partition_is_named(bad: str) -> None:
    with pytest.raises(ParamsError, match=r"crawl\.faces\.partition.*i/n"):
        parse_params({"crawl": {"faces": {"partition": bad}}})


@pytest.mark.parametrize("kind", ["avatars", "faces"])
def test_merged_parts_equal_one_crawl_and_nothing_is_fetched_again(tmp_path: Path, kind: str) -> None:
    whole = tmp_path / "whole"
    crawl(whole, kind, "0/1")
    parts = [tmp_path / f"part{i}" for i in range(2)]
    logs = [crawl(part, kind, f"{i}/2") for i, part in enumerate(parts)]
    rows = [len(pd.read_parquet(p / f"data/raw/{kind}.parquet")) for p in parts]
    assert all(rows) and sum(rows) == len(pd.read_parquet(whole / f"data/raw/{kind}.parquet"))
    assert all(log["fetched"] > 0 for log in logs)

    merged = tmp_path / "merged"
    merged.mkdir()
    with inside(merged):
        report = merge_parts(kind, parts, parse_params(small_params("0/1")))
    assert report.rows == sum(rows) and report.copied > 0 and report.present == 0

    log = crawl(merged, kind, "0/1")
    assert log["fetched"] == 0 and log["reused"] > 0
    assert files(merged, kind) == files(whole, kind)


def test_parts_that_disagree_are_not_merged(tmp_path: Path) -> None:
    parts = [tmp_path / "part0", tmp_path / "part1"]
    crawl(parts[0], "avatars", "0/1")
    crawl(parts[1], "avatars", "0/1")
    frame = pd.read_parquet(parts[1] / "data/raw/avatars.parquet")
    frame.loc[0, "sha256"] = "0" * 64
    frame.to_parquet(parts[1] / "data/raw/avatars.parquet")
    target = tmp_path / "merged"
    target.mkdir()
    with inside(target), pytest.raises(MergeError, match="different content"):
        merge_parts("avatars", parts, parse_params(small_params("0/1")))
    assert not (target / "data/raw/avatars.parquet").exists()


def test_merge_command_names_what_is_wrong(tmp_path: Path) -> None:
    runner = CliRunner()
    with inside(tmp_path):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(small_params("0/1")))
        result = runner.invoke(app, ["crawl", "merge", "faces", str(tmp_path / "nowhere")])
        assert result.exit_code == 1 and "nowhere" in result.output and "dvc repro crawl_faces" in result.output
        result = runner.invoke(app, ["crawl", "merge", "photos", str(tmp_path)])
        assert result.exit_code == 1 and "unknown crawl 'photos'" in result.output
