"""The face crawl through icrawler against the sandbox on 127.0.0.1: real photos, synthetic ones, engines, faults."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml
from conftest import kill_after_journal_rows

from pipeline.core.params import CrawlFacesParams, FaultParams, SandboxParams
from pipeline.core.storage import safe_name
from pipeline.crawl.face_store import dhash256, hamming
from pipeline.crawl.faces import FaceCrawlError, crawl_faces
from pipeline.sandbox.photo import identity_spec
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
StartServer = Callable[..., SandboxServer]


def config(tmp_path: Path, **overrides: object) -> CrawlFacesParams:
    fields: dict[str, object] = dict(
        identities=("Avery Quinn", "Blake Moreno"),
        per_identity=20,
        min_per_identity=5,
        retries=3,
        backoff_s=0.01,
        backoff_max_s=0.05,
        out_dir=str(tmp_path / "faces"),
        manifest=str(tmp_path / "faces.parquet"),
        metrics=str(tmp_path / "faces.json"),
    )
    fields.update(overrides)
    return CrawlFacesParams(**fields)  # type: ignore[arg-type]


def journal_rows(cfg: CrawlFacesParams) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(cfg.manifest + ".journal").read_text().splitlines()]


def check_manifest(cfg: CrawlFacesParams) -> pd.DataFrame:
    """Invariants of every face crawl: one row per candidate, a reason for every reject, files only for saved rows."""
    frame = pd.read_parquet(cfg.manifest)
    assert frame["key"].is_unique
    assert (frame.loc[frame.status != "ok", "reason"] != "").all()
    out = Path(cfg.out_dir)
    saved = frame[frame.status == "ok"]
    assert {p for p in out.rglob("*") if p.is_file()} == {out / p for p in saved["path"]}
    assert saved["sha256"].is_unique
    for row in saved.itertuples():
        assert row.path.startswith(f"{row.folder}/") and Path(row.path).stem == row.sha256
    assert not list(out.rglob(".*partial*")) and not Path(cfg.manifest + ".journal").exists()
    return frame


def test_every_faces_dev_photo_arrives_once_under_its_identity(tmp_path: Path, faces_dev: Path) -> None:
    sandbox = SandboxParams(photos=str(faces_dev))
    cfg = config(tmp_path, identities=(), per_identity=100)
    report = crawl_faces(cfg, sandbox, progress=False)
    frame = check_manifest(cfg)
    expected = {
        d.name: {hashlib.sha256(f.read_bytes()).hexdigest() for f in d.iterdir() if f.suffix != ".md"}
        for d in faces_dev.iterdir()
        if d.is_dir()
    }
    assert len(report.names) == 15 and len(report.rows) == report.kept
    assert report.kept == sum(map(len, expected.values())) == 348
    for identity, shas in expected.items():
        rows = frame[frame.identity == identity]
        assert set(rows["sha256"]) == shas and len(rows) == len(shas)
    for path in frame["path"]:
        assert cv2.imread(str(Path(cfg.out_dir) / path)) is not None
    assert set(frame["source"]) == {"sandbox"} and not frame["synthetic"].any()
    assert frame["gender"].isna().all()


def test_a_number_of_identities_crawls_the_sandboxs_first_people(tmp_path: Path, faces_dev: Path) -> None:
    cfg = config(tmp_path, identities=3, per_identity=4, min_per_identity=1)
    report = crawl_faces(cfg, SandboxParams(), progress=False)
    assert report.names == ["Avery Quinn", "Blake Moreno", "Casey Lindqvist"]
    assert set(check_manifest(cfg)["identity"]) == set(report.names)
    with pytest.raises(FaceCrawlError, match=r"identities is 3, a number of synthetic people, but sandbox.photos"):
        crawl_faces(config(tmp_path / "real", identities=3), SandboxParams(photos=str(faces_dev)), progress=False)
    with pytest.raises(FaceCrawlError, match=r"crawl.faces.identities: 5000 synthetic people .* at most 3600"):
        crawl_faces(config(tmp_path / "many", identities=5000), SandboxParams(), progress=False)


def test_synthetic_identities_carry_traits_and_real_rejects(tmp_path: Path) -> None:
    cfg = config(tmp_path, identities=("Avery Quinn", "Blake Moreno", "Casey Lindqvist"), per_identity=60)
    report = crawl_faces(cfg, SandboxParams(), progress=False)
    frame = check_manifest(cfg)
    assert len(frame) == 180 == len(report.rows)
    assert {"duplicate", "near_duplicate", "http_404"} <= set(report.details()["rejected_by_reason"])
    for name, rows in frame.groupby("identity"):
        spec = identity_spec(safe_name(str(name)), 0)
        assert (rows["gender"] == spec.gender).all() and (rows["glasses"] == spec.trait_dict["glasses"]).all()
    kinds = frame["synthetic_kind"].value_counts()
    assert kinds["single"] > 150 and set(kinds.index) <= {"single", "no_face", "two_faces"}
    again = crawl_faces(cfg, SandboxParams(), progress=False)
    assert again.work["reused"] == report.kept and again.kept == report.kept


@pytest.mark.parametrize("engine", ["bing", "google", "baidu", "flickr"])
def test_engine_wiring_against_a_server_speaking_its_format(
    tmp_path: Path, sandbox_server: StartServer, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", "test-key")
    server = sandbox_server(photos_per_identity=12)
    cfg = config(tmp_path, source=engine, engine_url=server.url, per_identity=12)
    report = crawl_faces(cfg, SandboxParams(), progress=False)
    frame = check_manifest(cfg)
    assert report.kept >= 16 and set(frame["source"]) == {engine}
    assert frame["url"].str.startswith(server.url + "/photos/").all()
    assert sorted(frame.groupby("identity").size()) == [12, 12]


def test_flickr_without_a_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    with pytest.raises(FaceCrawlError, match="FLICKR_API_KEY"):
        crawl_faces(config(tmp_path, source="flickr", engine_url="http://127.0.0.1:9"), SandboxParams(), progress=False)


def test_faults_leave_one_row_per_candidate_with_reasons(tmp_path: Path) -> None:
    faults = FaultParams(error_503=0.2, truncated=0.15, wrong_type=0.1, corrupt=0.1, retry_after_s=0.01, seed=2)
    cfg = config(tmp_path, retries=2)
    report = crawl_faces(cfg, SandboxParams(faults=faults), progress=False)
    frame = check_manifest(cfg)
    assert len(frame) == 40
    reasons = set(report.details()["rejected_by_reason"])
    assert {"wrong_content_type", "corrupt"} <= reasons
    assert reasons <= {
        "wrong_content_type",
        "corrupt",
        "truncated",
        "http_503",
        "http_404",
        "duplicate",
        "near_duplicate",
    }
    assert frame.loc[frame.status == "ok", "attempts"].max() > 1  # transient faults were retried


def test_hostile_identity_names_stay_inside_the_output(tmp_path: Path) -> None:
    names = ("../../etc", "Beyoncé Knowles", "O'Brien; rm -rf", "a/b\\c")
    cfg = config(tmp_path, identities=names, per_identity=8)
    crawl_faces(cfg, SandboxParams(), progress=False)
    frame = check_manifest(cfg)
    assert set(frame["identity"]) == set(names)
    out = Path(cfg.out_dir).resolve()
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(safe_name(n) for n in names)
    assert not (tmp_path.parent / "etc").exists()


def test_zero_result_identity_fails_naming_it_and_the_engine(tmp_path: Path, faces_dev: Path) -> None:
    cfg = config(tmp_path, identities=("madonna", "Nobody Atall"), per_identity=5)
    with pytest.raises(FaceCrawlError, match=r"1 identities got no photo from sandbox .*'Nobody Atall'"):
        crawl_faces(cfg, SandboxParams(photos=str(faces_dev)), progress=False)
    assert not Path(cfg.manifest).exists()  # a failed run writes no manifest; its rows wait in the journal
    assert sum(row["identity"] == "madonna" for row in journal_rows(cfg)) == 5


def test_unreachable_engine_points_to_the_sandbox(tmp_path: Path) -> None:
    cfg = config(tmp_path, source="bing", engine_url="http://127.0.0.1:9", retries=0, timeout_s=2)
    with pytest.raises(FaceCrawlError, match=r"network may be unreachable.*crawl.faces.source: sandbox"):
        crawl_faces(cfg, SandboxParams(), progress=False)


def test_url_list_and_folder_sources(tmp_path: Path, sandbox_server: StartServer, faces_dev: Path) -> None:
    server = sandbox_server(photos=str(faces_dev))
    listing = tmp_path / "urls.txt"
    lines = [f"Madonna,{server.url}/photos/madonna/{i}.jpg" for i in range(3)] + [
        f"Elton,{server.url}/photos/nope/0.jpg"
    ]
    listing.write_text("# identity,url\n" + "\n".join(lines) + "\n")
    cfg = config(tmp_path / "u", source="urls", urls_file=str(listing), identities=(), min_per_identity=0)
    with pytest.raises(FaceCrawlError, match="'Elton'"):
        crawl_faces(cfg, SandboxParams(), progress=False)
    rows = sorted(journal_rows(cfg), key=lambda r: r["rank"])
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "rejected"] and rows[3]["reason"] == "http_404"
    assert rows[3]["detail"] == "server answered 404: no photo 0 of nope"  # the server's own words
    folder = config(
        tmp_path / "f", source="folder", folder=str(faces_dev), identities=("madonna", "elton_john"), per_identity=100
    )
    report = crawl_faces(folder, SandboxParams(), progress=False)
    assert report.kept == 24 + 22 and set(pd.read_parquet(folder.manifest)["source"]) == {"folder"}


def test_near_duplicate_hash_separates_resizes_from_different_photos(faces_dev: Path) -> None:
    photo = cv2.imread(str(next((faces_dev / "madonna").glob("*.jpg"))))
    small = cv2.resize(photo, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    original = dhash256(cv2.imencode(".jpg", photo)[1].tobytes())
    resized = dhash256(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes())
    assert hamming(original, resized) <= 8
    hashes = [dhash256(p.read_bytes()) for p in sorted((faces_dev / "laura_bush").glob("*.jpg"))]
    closest = min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert closest > 8
    assert len(bytes.fromhex(original)) == 32  # 256 bits


def test_kill_9_midway_then_resume(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["crawl"]["faces"].update(
        identities=["Avery Quinn", "Blake Moreno", "Casey Lindqvist"], per_identity=60, concurrency=2
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kill_after_journal_rows(tmp_path, "crawl_faces", rows=40)
    journaled = (tmp_path / "data/raw/faces.parquet.journal").read_text().count("\n")
    assert 32 <= journaled <= 40, "the journal flushes every 32 rows (or 0.5 s): the kill lands midway"
    result = subprocess.run(
        [sys.executable, "-m", "stages.crawl_faces"], cwd=tmp_path, env=env, timeout=300, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    cfg = config(tmp_path, out_dir=str(tmp_path / "data/raw/faces"), manifest=str(tmp_path / "data/raw/faces.parquet"))
    frame = check_manifest(cfg)
    assert len(frame) == 180
    resumed = int(result.stdout.split("(")[1].split(" reused")[0])
    assert resumed >= journaled * 0.8  # saved rows resume; journaled rejects are fetched again


def test_a_full_downloader_queue_never_drops_a_task() -> None:
    import threading

    import requests
    from icrawler.utils import CachedQueue, Signal

    from pipeline.crawl.engines import BingTaggingParser, PageStats

    queue = CachedQueue(1)
    parser = BingTaggingParser(1, Signal(), requests.Session(), out_queue=queue, stats=PageStats(), per_identity=5)
    queue.put({"file_url": "first"})
    puts: list[tuple[bool, float | None]] = []
    put = queue.put

    def spy(item: dict, block: bool = True, timeout: float | None = None) -> None:
        puts.append((block, timeout))
        put(item, block, timeout)

    queue.put = spy  # type: ignore[method-assign]
    # icrawler's loop: output(task, timeout=1), and on queue.Full a retry that its cache would drop.
    sender = threading.Thread(target=parser.output, args=({"file_url": "second"},), kwargs={"timeout": 0.05})
    sender.start()
    assert queue.get(timeout=5) == {"file_url": "first"}
    assert queue.get(timeout=5) == {"file_url": "second"}
    sender.join(timeout=5)
    assert puts == [(True, None)]  # a put that waits as long as it takes: never the caller's timeout
