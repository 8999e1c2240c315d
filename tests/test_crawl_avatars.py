"""The async avatar crawler against real local servers: clean runs, every fault, resume, kill -9 and a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import kill_after_journal_rows

from pipeline.core.manifest import journal_path, manifest_params
from pipeline.core.params import CrawlAvatarsParams, FaultParams, SandboxParams
from pipeline.core.storage import DiskFullError
from pipeline.crawl import avatars as crawler
from pipeline.crawl.avatars import CrawlError, crawl_avatars
from pipeline.crawl.fetch import RetryPolicy, parse_retry_after
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
StartServer = Callable[..., SandboxServer]


def config(tmp_path: Path, endpoint: str, **overrides: object) -> CrawlAvatarsParams:
    fields: dict[str, object] = dict(
        endpoint=endpoint,
        count=40,
        concurrency=8,
        retries=3,
        backoff_s=0.01,
        backoff_max_s=0.05,
        out_dir=str(tmp_path / "avatars"),
        manifest=str(tmp_path / "avatars.parquet"),
        metrics=str(tmp_path / "metrics.json"),
    )
    fields.update(overrides)
    return CrawlAvatarsParams(**fields)  # type: ignore[arg-type]


def check_manifest(cfg: CrawlAvatarsParams) -> pd.DataFrame:
    """Invariants every crawl must keep: one row per requested avatar, files for ok rows, no partial files."""
    frame = pd.read_parquet(cfg.manifest)
    assert len(frame) == cfg.count and frame["key"].is_unique
    assert set(frame["status"]) <= {"ok", "rejected"}
    assert (frame.loc[frame.status == "rejected", "reason"] != "").all()
    saved = frame[frame.status == "ok"]
    out = Path(cfg.out_dir)
    files = {p for p in out.rglob("*") if p.is_file()}
    assert files == {out / p for p in saved["path"]}
    for row in saved.itertuples():
        assert Path(row.path).stem == row.sha256 and row.width == row.height == 256
    assert not list(out.rglob(".*partial*")) and not journal_path(Path(cfg.manifest)).exists()
    return frame


def test_clean_crawl_saves_every_avatar_with_its_traits(tmp_path: Path, sandbox_server: StartServer) -> None:
    server = sandbox_server()
    cfg = config(tmp_path, server.url)
    report = crawl_avatars(cfg, SandboxParams(), progress=False)
    assert (len(report.rows), report.kept, report.rejected, report.work["reused"]) == (40, 40, 0, 0)
    frame = check_manifest(cfg)
    first = frame.iloc[0]
    for key in ("gender", "style", "hair", "glasses", "skin_tone"):
        assert f"{key}={first[key]}" in first["url"]
    assert set(frame["gender"]) == {1, 2} and set(frame["style"]) == {4, 5}
    assert manifest_params(Path(cfg.manifest))["crawl.avatars"]["count"] == 40
    assert report.work["fetched"] == 40 and report.work["bytes_fetched"] > 40 * 1000
    assert report.metrics() == {"avatars": {"kept": 40, "rejected": 0}}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong_type", "wrong_content_type"),
        ("corrupt", "corrupt"),
        ("oversized", "too_many_pixels"),
        ("error_500", "http_500"),
        ("error_429", "http_429"),
        ("error_503", "http_503"),
        ("truncated", "truncated"),
    ],
)
def test_every_fault_ends_saved_or_failed_with_its_reason(
    tmp_path: Path, sandbox_server: StartServer, fault: str, reason: str
) -> None:
    # Half the attempts fail: retryable faults are mostly overcome, content faults stay failed.
    server = sandbox_server(FaultParams(retry_after_s=0.01, seed=1, **{fault: 0.5}))
    cfg = config(tmp_path, server.url, retries=2)
    report = crawl_avatars(cfg, SandboxParams(), progress=False)
    frame = check_manifest(cfg)
    failed = frame[frame.status == "rejected"]
    assert set(failed["reason"]) <= {reason}
    assert report.kept + report.rejected == 40 and report.rejected == len(failed)
    if reason.startswith("http_") or reason == "truncated":
        assert report.kept >= 30 and frame["attempts"].max() > 1
    else:
        assert 5 <= report.rejected <= 35 and frame["attempts"].max() == 1


def test_all_failing_exits_with_endpoint_and_reason(tmp_path: Path, sandbox_server: StartServer) -> None:
    server = sandbox_server(FaultParams(error_503=1.0, retry_after_s=0.0))
    cfg = config(tmp_path, server.url, count=10, retries=1)
    with pytest.raises(
        CrawlError, match=rf"all 10 avatar requests to {server.url}.*most common reason: http_503 .10x., e.g. server"
    ):
        crawl_avatars(cfg, SandboxParams(), progress=False)
    # A failed run writes no manifest; its rows wait in the journal for the next run.
    assert not Path(cfg.manifest).exists()
    journal = [json.loads(line) for line in journal_path(Path(cfg.manifest)).read_text().splitlines()]
    assert len(journal) == 10 and {r["reason"] for r in journal} == {"http_503"}
    assert "unavailable" in journal[0]["detail"]  # the server's own words


def test_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9", retries=0)
    with pytest.raises(CrawlError, match=r"cannot read the avatar catalogue of http://127.0.0.1:9"):
        crawl_avatars(cfg, SandboxParams(), progress=False)


def test_the_crawl_wears_hats_and_glasses_as_often_as_the_people(tmp_path: Path, sandbox_server: StartServer) -> None:
    server = sandbox_server()
    people = config(tmp_path / "people", server.url, count=200)
    assert people.trait_presence == "people"  # the default
    crawl_avatars(people, SandboxParams(), progress=False)
    frame = check_manifest(people)
    uniform = config(tmp_path / "uniform", server.url, count=200, trait_presence="uniform")
    crawl_avatars(uniform, SandboxParams(), progress=False)
    flat = check_manifest(uniform)
    assert (frame["hat"] != -1).mean() < 0.2 and (flat["hat"] != -1).mean() > 0.8  # people 0.089, uniform 8/9
    assert (frame["glasses"] != -1).mean() < 0.4 and (flat["glasses"] != -1).mean() > 0.75  # people 0.257, uniform 6/7
    assert manifest_params(Path(people.manifest))["crawl.avatars"]["trait_presence"] == "people"


def test_a_trait_the_catalogue_lacks_is_a_clear_error(tmp_path: Path, sandbox_server: StartServer) -> None:
    server = sandbox_server()
    cfg = config(tmp_path, server.url, trait_presence={"cape": 0.2})
    with pytest.raises(
        CrawlError,
        match=r"trait_presence \{'cape': 0.2\}.*'cape', which is not an optional trait.*"
        r"'glasses'.*Change those params",
    ):
        crawl_avatars(cfg, SandboxParams(), progress=False)
    assert not Path(cfg.manifest).exists()


def test_rerun_resumes_and_a_larger_count_extends(tmp_path: Path, sandbox_server: StartServer) -> None:
    server = sandbox_server()
    cfg = config(tmp_path, server.url, count=30)
    crawl_avatars(cfg, SandboxParams(), progress=False)
    before = pd.read_parquet(cfg.manifest)
    again = crawl_avatars(cfg, SandboxParams(), progress=False)
    assert (again.work["reused"], again.work["fetched"]) == (30, 0)
    pd.testing.assert_frame_equal(before, pd.read_parquet(cfg.manifest))
    larger = crawl_avatars(cfg.model_copy(update={"count": 45}), SandboxParams(), progress=False)
    assert (larger.work["reused"], larger.work["fetched"], larger.kept) == (30, 15, 45)


def test_disk_full_stops_with_a_message_and_the_rerun_resumes(
    tmp_path: Path, sandbox_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox_server()
    cfg = config(tmp_path, server.url, count=30, concurrency=2)
    real_write = crawler.write_content
    writes = {"n": 0}

    def filling_disk(path: Path, data: bytes) -> None:
        writes["n"] += 1
        if writes["n"] > 10:
            raise DiskFullError(28, f"no space left on the device while writing {path}")
        real_write(path, data)

    monkeypatch.setattr(crawler, "write_content", filling_disk)
    with pytest.raises(CrawlError, match=r"no space left on the device.*free some space and re-run"):
        crawl_avatars(cfg, SandboxParams(), progress=False)
    assert journal_path(Path(cfg.manifest)).exists()
    monkeypatch.setattr(crawler, "write_content", real_write)
    report = crawl_avatars(cfg, SandboxParams(), progress=False)
    assert report.work["reused"] == 10 and report.kept == 30
    check_manifest(cfg)


def test_kill_9_midway_then_resume(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["crawl"]["avatars"].update(count=120, concurrency=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kill_after_journal_rows(tmp_path, "crawl_avatars", rows=40)
    journal = tmp_path / "data/raw/avatars.parquet.journal"
    journaled = journal.read_text().count("\n")
    assert 32 <= journaled <= 40, "the journal flushes every 32 rows (or 0.5 s): the kill lands midway"
    assert not (tmp_path / "data/raw/avatars.parquet").exists()
    result = subprocess.run(
        [sys.executable, "-m", "stages.crawl_avatars"],
        cwd=tmp_path,
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"({journaled} reused" in result.stdout
    cfg = CrawlAvatarsParams(
        **{
            **params["crawl"]["avatars"],
            "out_dir": str(tmp_path / "data/raw/avatars"),
            "manifest": str(tmp_path / "data/raw/avatars.parquet"),
        }
    )
    frame = check_manifest(cfg)
    assert (frame.status == "ok").all()


def test_retry_policy_honours_retry_after_and_caps_backoff() -> None:
    import random

    policy = RetryPolicy(retries=5, backoff_s=0.5, backoff_max_s=4.0)
    rng = random.Random(0)
    delays = [policy.delay(a, None, rng) for a in range(1, 8)]
    assert all(d <= 4.0 for d in delays) and delays[0] <= 0.5 and max(delays) > 1.0
    assert policy.delay(1, 7.0, rng) == 7.0
    assert policy.delay(1, 10_000.0, rng) == policy.retry_after_cap_s
    assert parse_retry_after("3") == 3.0 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
