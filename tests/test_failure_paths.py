"""A failed run never deletes or shrinks what an earlier run saved, and resume re-checks what it reuses.

Every failure path runs on top of a good earlier run and then checks that each file and manifest of that run is
still there, byte for byte: an engine that stopped answering, one identity's search failing, every request
failing, a full disk, and Ctrl-C (SIGINT to a real stage process).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from aiohttp import web
from conftest import signal_after_journal_rows

from pipeline.core import storage
from pipeline.core.params import CrawlAvatarsParams, CrawlFacesParams, FaultParams, SandboxParams
from pipeline.core.runner import StageError
from pipeline.core.storage import TMP_MARK, DiskFullError
from pipeline.crawl import avatars as avatar_crawl
from pipeline.crawl import face_store
from pipeline.crawl.avatars import CrawlError, crawl_avatars
from pipeline.crawl.faces import FaceCrawlError, crawl_faces
from pipeline.sandbox import server as sandbox_server_module
from pipeline.sandbox.app import create_app
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
IDENTITIES = ("Avery Quinn", "Blake Moreno")


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the given folders or files."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def assert_kept(before: dict[str, str]) -> None:
    """Every file of the earlier run is still there with the same bytes (new, unreferenced files may be added)."""
    now = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in before if Path(path).is_file()}
    assert now == before, f"lost or changed: {sorted(set(before) - set(now))[:5]}"


def faces_config(tmp_path: Path, **overrides: Any) -> CrawlFacesParams:
    fields: dict[str, Any] = dict(
        identities=IDENTITIES,
        per_identity=6,
        min_per_identity=1,
        concurrency=2,
        retries=1,
        backoff_s=0.01,
        backoff_max_s=0.02,
        out_dir=str(tmp_path / "faces"),
        manifest=str(tmp_path / "faces.parquet"),
    )
    return CrawlFacesParams(**{**fields, **overrides})


def avatars_config(tmp_path: Path, **overrides: Any) -> CrawlAvatarsParams:
    fields: dict[str, Any] = dict(
        count=6,
        concurrency=4,
        retries=1,
        backoff_s=0.01,
        backoff_max_s=0.02,
        out_dir=str(tmp_path / "avatars"),
        manifest=str(tmp_path / "avatars.parquet"),
    )
    return CrawlAvatarsParams(**{**fields, **overrides})


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SandboxServer]]:
    """Start a sandbox that speaks Bing's format, optionally answering some requests with what `answer` returns."""
    started: list[SandboxServer] = []

    def start(answer: Callable[[web.Request], web.Response | None] | None = None) -> SandboxServer:
        def app_with_answers(cfg: SandboxParams) -> web.Application:
            app = create_app(cfg)

            @web.middleware
            async def override(request: web.Request, handler: Any) -> web.StreamResponse:
                response = answer(request) if answer else None
                return response if response is not None else await handler(request)

            app.middlewares.append(override)
            return app

        monkeypatch.setattr(sandbox_server_module, "create_app", app_with_answers)
        server = SandboxServer(SandboxParams()).__enter__()
        monkeypatch.setattr(sandbox_server_module, "create_app", create_app)
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def earlier_faces(tmp_path: Path, **overrides: Any) -> tuple[CrawlFacesParams, dict[str, str]]:
    cfg = faces_config(tmp_path, **overrides)
    report = crawl_faces(cfg, SandboxParams(), progress=False)
    assert report.kept >= 8
    return cfg, snapshot(Path(cfg.out_dir), Path(cfg.manifest))


# ---- the face crawl --------------------------------------------------------------------------------------------


def test_engine_that_stopped_answering_loses_nothing(tmp_path: Path, engine: Callable[..., SandboxServer]) -> None:
    server = engine()
    cfg, before = earlier_faces(tmp_path, source="bing", engine_url=server.url)
    server.__exit__(None, None, None)  # the engine goes away, and the user asks for one more photo each
    with pytest.raises(FaceCrawlError, match=r"no search page of bing .* answered: ConnectionError.*unreachable"):
        crawl_faces(cfg.model_copy(update={"per_identity": 7}), SandboxParams(), progress=False)
    assert_kept(before)


def test_one_identitys_failing_search_is_quoted_and_loses_nothing(
    tmp_path: Path, engine: Callable[..., SandboxServer]
) -> None:
    failing = {"on": False}

    def busy(request: web.Request) -> web.Response | None:
        if failing["on"] and request.path == "/images/async" and request.query.get("q") == "Blake Moreno":
            return web.Response(status=503, text="<html><h1>Service busy</h1> try again in an hour</html>")
        return None

    server = engine(busy)
    cfg, before = earlier_faces(tmp_path, source="bing", engine_url=server.url)
    failing["on"] = True
    work: dict[str, Any] = {}
    with pytest.raises(FaceCrawlError, match=r"'Blake Moreno': search_error: answered 503: Service busy try again"):
        crawl_faces(cfg, SandboxParams(), progress=False, work=work)
    assert [p["identity"] for p in work["search_problems"]] == ["Blake Moreno"]  # the run log keeps the words
    assert_kept(before)
    journal = [json.loads(line) for line in Path(cfg.manifest + ".journal").read_text().splitlines()]
    assert [r["reason"] for r in journal if r["identity"] == "Blake Moreno"] == ["search_error"]


@pytest.mark.parametrize(
    ("source", "answer", "words"),
    [
        # Flickr's answer to a bad key, and a Bing page whose layout changed: the engine's words, not "no network"
        ("flickr",
         lambda r: web.json_response({"stat": "fail", "code": 100, "message": "Invalid API Key (Key has expired)"}),
         r"search_error: flickr answered .*Invalid API Key \(Key has expired\)"),
        ("bing",
         lambda r: web.Response(text="<html><body>Images moved to the new Bing experience</body></html>",
                                content_type="text/html") if r.path == "/images/async" else None,
         r"its search listed no photo; the page said: 'Images moved to the new Bing experience'"),
    ],
    ids=["flickr_invalid_key", "bing_layout_changed"],
)  # fmt: skip
def test_an_engine_that_answers_with_an_error_is_quoted(
    tmp_path: Path,
    engine: Callable[..., SandboxServer],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    answer: Any,
    words: str,
) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", "expired-key")
    server = engine(answer)
    cfg = faces_config(tmp_path, source=source, engine_url=server.url)
    with pytest.raises(FaceCrawlError, match=words) as failure:
        crawl_faces(cfg, SandboxParams(), progress=False)
    assert "unreachable" not in str(failure.value)


def test_every_request_failing_loses_nothing(tmp_path: Path) -> None:
    cfg, before = earlier_faces(tmp_path)
    failing = SandboxParams(faults=FaultParams(error_500=1.0))  # another world: every photo is fetched again
    with pytest.raises(FaceCrawlError, match=r"2 identities got no photo .*candidates rejected: http_500 6x"):
        crawl_faces(cfg, failing, progress=False)
    assert_kept(before)


def test_full_disk_during_a_larger_face_crawl_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, before = earlier_faces(tmp_path)

    def full(path: Path, data: bytes) -> None:
        raise DiskFullError(28, f"no space left on the device while writing {path}")

    monkeypatch.setattr(face_store, "write_content", full)
    with pytest.raises(FaceCrawlError, match=r"no space left on the device.*free some space and re-run"):
        crawl_faces(cfg.model_copy(update={"per_identity": 9}), SandboxParams(), progress=False)
    assert_kept(before)


# ---- the avatar crawl ------------------------------------------------------------------------------------------


def test_avatar_endpoint_that_stopped_answering_loses_nothing(tmp_path: Path) -> None:
    with SandboxServer(SandboxParams()) as server:
        cfg = avatars_config(tmp_path, endpoint=server.url)
        crawl_avatars(cfg, SandboxParams(), progress=False)
    before = snapshot(Path(cfg.out_dir), Path(cfg.manifest))
    with pytest.raises(
        CrawlError,
        match=r"cannot read the avatar catalogue .*Cannot connect to host.*Nothing saved earlier was changed",
    ):
        crawl_avatars(cfg.model_copy(update={"count": 9}), SandboxParams(), progress=False)
    assert_kept(before)


def test_every_avatar_request_failing_loses_nothing(tmp_path: Path) -> None:
    cfg = avatars_config(tmp_path)
    crawl_avatars(cfg, SandboxParams(), progress=False)
    before = snapshot(Path(cfg.out_dir), Path(cfg.manifest))
    failing = SandboxParams(faults=FaultParams(error_503=1.0, retry_after_s=0.0))
    with pytest.raises(CrawlError, match=r"all 6 avatar requests .*http_503 .6x., e.g. server answered 503"):
        crawl_avatars(cfg, failing, progress=False)
    assert_kept(before)


def test_full_disk_during_a_larger_avatar_crawl_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = avatars_config(tmp_path)
    crawl_avatars(cfg, SandboxParams(), progress=False)
    before = snapshot(Path(cfg.out_dir), Path(cfg.manifest))

    def full(path: Path, data: bytes) -> None:
        raise DiskFullError(28, f"no space left on the device while writing {path}")

    monkeypatch.setattr(avatar_crawl, "write_content", full)
    with pytest.raises(CrawlError, match=r"no space left on the device.*free some space and re-run"):
        crawl_avatars(cfg.model_copy(update={"count": 12}), SandboxParams(), progress=False)
    assert_kept(before)


# ---- resume checks what it reuses --------------------------------------------------------------------------------


def test_an_avatar_emptied_by_hand_is_fetched_again(tmp_path: Path) -> None:
    cfg = avatars_config(tmp_path)
    crawl_avatars(cfg, SandboxParams(), progress=False)
    manifest = Path(cfg.manifest).read_bytes()
    victim = Path(cfg.out_dir) / pd.read_parquet(cfg.manifest)["path"].iloc[0]
    good = victim.read_bytes()
    victim.write_bytes(b"")
    report = crawl_avatars(cfg, SandboxParams(), progress=False)
    assert (report.work["reused"], report.work["fetched"]) == (5, 1)
    assert victim.read_bytes() == good and Path(cfg.manifest).read_bytes() == manifest


def test_a_photo_replaced_by_hand_is_fetched_again(tmp_path: Path) -> None:
    cfg = faces_config(tmp_path)
    crawl_faces(cfg, SandboxParams(), progress=False)
    manifest = Path(cfg.manifest).read_bytes()
    frame = pd.read_parquet(cfg.manifest).query("status == 'ok'")
    victim = Path(cfg.out_dir) / frame["path"].iloc[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])  # same name, half the bytes: a torn write
    report = crawl_faces(cfg, SandboxParams(), progress=False)
    assert report.work["fetched"] == 1 and victim.read_bytes() == good
    assert Path(cfg.manifest).read_bytes() == manifest


def test_atomic_writes_reach_the_disk_before_their_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(storage.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    storage.atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert calls == ["fsync", "replace"] and (tmp_path / "x.bin").read_bytes() == b"data"


def test_a_read_only_folder_is_one_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EROFS on the temp file, and again on its clean-up: the user hears about the file once, not about the temp."""

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage.os, "open", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(storage.OutputError) as info:
        storage.atomic_write_bytes(tmp_path / "out.png", b"data")
    assert str(info.value) == (
        f"{tmp_path / 'out.png'} could not be written: Read-only file system; choose a folder you can write to"
    )
    assert TMP_MARK not in str(info.value)


def test_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(storage.DiskFullError, match=r"out.bin could not be written: No space \(the disk or the file"):
        storage.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert not list(tmp_path.iterdir())  # no temp file left behind


# ---- align -----------------------------------------------------------------------------------------------------


def test_full_disk_during_a_changed_align_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.params import parse_params
    from pipeline.faces import align_run, align_tasks

    raw = {
        "crawl": {
            "faces": {"identities": list(IDENTITIES), "per_identity": 4, "min_per_identity": 1},
            "avatars": {"count": 4},
        },
        "align": {"workers": 1, "samples": str(tmp_path / "sheet.png")},
    }
    for section, name in (("faces", "faces"), ("avatars", "avatars")):
        raw["crawl"][section].update(out_dir=str(tmp_path / name), manifest=str(tmp_path / f"{name}.parquet"))
    raw["align"]["out_dir"] = str(tmp_path / "aligned")
    params = parse_params(raw)
    crawl_faces(params.crawl.faces, params.sandbox, progress=False)
    crawl_avatars(params.crawl.avatars, params.sandbox, progress=False)
    align_run.run_align(params, progress=False)
    before = snapshot(tmp_path / "aligned")
    writes = {"n": 0}
    real_write = align_tasks.atomic_write_bytes  # where the crops are written (workers: 1 runs it in-process)

    def filling(path: Path, data: bytes) -> None:
        writes["n"] += 1
        if writes["n"] > 2:
            raise DiskFullError(28, f"no space left on the device while writing {path}")
        real_write(path, data)

    monkeypatch.setattr(align_tasks, "atomic_write_bytes", filling)
    sized = parse_params({**raw, "align": {**raw["align"], "size": 96}})
    with pytest.raises(StageError, match=r"no space left.*the earlier manifest and its crops are unchanged"):
        align_run.run_align(sized, progress=False)
    assert_kept(before)


# ---- Ctrl-C: SIGINT to a real stage process ------------------------------------------------------------------------


def write_params(root: Path, **sections: dict[str, Any]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    faces = params["crawl"]["faces"]
    faces.update(identities=list(IDENTITIES), per_identity=6, min_per_identity=1)
    params["crawl"]["avatars"].update(count=6)
    params["align"].update(workers=1)
    for dotted, values in sections.items():
        node = params
        for part in dotted.split("."):
            node = node[part]
        node.update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def stage(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{name}"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize(
    ("name", "outputs", "base", "changed"),
    [
        ("crawl_avatars", ("data/raw/avatars", "data/raw/avatars.parquet"), {}, {"crawl.avatars": {"count": 300}}),
        ("crawl_faces", ("data/raw/faces", "data/raw/faces.parquet"), {}, {"crawl.faces": {"per_identity": 60}}),
        # two processes: queued chunks are cancelled, so SIGINT stops the pool within a chunk
        ("align", ("data/aligned",), {"crawl.faces": {"per_identity": 12}, "align": {"chunk_size": 2}},
         {"align": {"chunk_size": 2, "size": 96, "workers": 2}}),
    ],
)  # fmt: skip
def test_ctrl_c_loses_nothing(
    tmp_path: Path, name: str, outputs: tuple[str, ...], base: dict[str, dict], changed: dict[str, dict]
) -> None:
    write_params(tmp_path, **base)
    for prerequisite in {"align": ["crawl_faces", "crawl_avatars"]}.get(name, []):
        stage(tmp_path, prerequisite)
    stage(tmp_path, name)
    before = snapshot(*(tmp_path / path for path in outputs))
    write_params(tmp_path, **{**base, **changed})
    result = signal_after_journal_rows(tmp_path, name, rows=3, sig="SIGINT")  # Ctrl-C after the third row
    assert result.returncode == 130, result.stderr
    assert "interrupted; re-run to resume" in result.stderr and "Traceback" not in result.stderr
    assert_kept(before)
    assert json.loads((tmp_path / f"reports/runs/{name}.json").read_text())["status"] == "interrupted"
