"""The reuse rule as a property: for every param of every data stage, change it and re-run on top of the earlier
outputs, and the manifests, files and metrics equal a clean run with the new value, byte for byte.

Params that only decide speed (workers, concurrency, chunk sizes, the render cache, latency) are checked the other
way round as well: a clean run with the new value gives the same data as the earlier one. A test at the end walks
every params model, so a new param without a case here fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.core.params import (
    AlignParams,
    CrawlAvatarsParams,
    CrawlFacesParams,
    FaultParams,
    PackParams,
    SandboxParams,
    parse_params,
)
from pipeline.sandbox.photo import encode_jpeg, render_photo
from pipeline.sandbox.server import SandboxServer
from stages import align, crawl_avatars, crawl_faces, pack

REPO = Path(__file__).resolve().parents[1]
STAGES = {"crawl_avatars": crawl_avatars, "crawl_faces": crawl_faces, "align": align, "pack": pack}
LEVEL = {"crawl_avatars": 1, "crawl_faces": 1, "align": 2, "pack": 3}  # which template holds a stage's inputs
OUTPUTS = {
    "crawl_avatars": ["data/raw/avatars", "data/raw/avatars.parquet"],
    "crawl_faces": ["data/raw/faces", "data/raw/faces.parquet"],
    "align": ["data/aligned", "reports/align_samples.png"],
    "pack": ["data/shards"],
}
SECTION = {"crawl_avatars": "crawl.avatars", "crawl_faces": "crawl.faces", "align": "align", "pack": "pack"}
IDENTITIES = ["Avery Quinn", "Blake Moreno", "Casey Lindqvist", "Dana Okafor"]  # pack holds 2 out: 1 val, 1 test


def base_params() -> dict[str, Any]:
    """The shipped params.yaml at a scale where one run of any stage takes about a second."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["sandbox"]["faults"]["retry_after_s"] = 0.01
    fetch = dict(retries=2, backoff_s=0.01, backoff_max_s=0.05)
    raw["crawl"]["avatars"].update(count=6, concurrency=4, **fetch)
    raw["crawl"]["faces"].update(identities=IDENTITIES, per_identity=4, min_per_identity=1, concurrency=2, **fetch)
    raw["align"].update(workers=1, chunk_size=4)
    raw["pack"].update(min_faces_per_identity=2, shard_size=4, val_fraction=0.2, test_fraction=0.2)
    return raw


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `raw` with dotted keys set."""
    raw = json.loads(json.dumps(raw))
    for dotted, value in values.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return raw


@contextlib.contextmanager
def inside(root: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


def run(root: Path, stage: str, raw: dict[str, Any]) -> None:
    """Run a stage's main in `root` with these params (written to params.yaml too); it must succeed."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with inside(root):
        try:
            STAGES[stage].main(parse_params(raw))
        except SystemExit as exc:
            pytest.fail(f"{stage} failed in {root} (exit {exc.code}); see its message above")


def outputs(root: Path, stage: str) -> dict[str, bytes]:
    """Every file a stage leaves, with the bytes of its metrics and details (its run log describes the run)."""
    found: dict[str, bytes] = {}
    for name in [*OUTPUTS[stage], f"metrics/{stage}.json", f"reports/details/{stage}.json"]:
        path = root / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        found.update({p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.is_file()})
    return found


def data_only(files: dict[str, bytes]) -> dict[str, Any]:
    """What two runs that differ only in a speed param must share: all but the resolved params saved beside data."""

    def without_params(name: str, data: bytes) -> Any:
        if name.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data)).to_json()
        if name.endswith("labels.json"):
            return {k: v for k, v in json.loads(data).items() if k != "params"}
        return data

    return {name: without_params(name, data) for name, data in files.items()}


def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=False)
    return target


# ---- the world every case runs in ---------------------------------------------------------------------------------


@dataclass
class World:
    """Templates of a base run after each level (1 = both crawls, 2 = align, 3 = pack) and the inputs cases use."""

    root: Path
    servers: list[str] = field(default_factory=list)  # two sandbox hosts speaking Bing's format
    folders: list[str] = field(default_factory=list)  # two photo folders of <identity>/<files>
    url_lists: list[str] = field(default_factory=list)  # two `identity,url` files

    def template(self, level: int) -> Path:
        return self.root / f"level{level}"


def write_photo_folder(root: Path, indexes: range) -> str:
    for name in (who.lower().replace(" ", "_") for who in IDENTITIES):
        for index in indexes:
            path = root / name / f"{index:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_jpeg(render_photo(name, index, 7).image, 90))
    return str(root)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("reuse-world")
    hosts = [SandboxServer(SandboxParams()).__enter__() for _ in range(2)]
    world = World(root, [host.url for host in hosts])
    world.folders = [
        write_photo_folder(root / "photos-a", range(4)),
        write_photo_folder(root / "photos-b", range(2, 6)),
    ]
    for i, indexes in enumerate((range(3), range(1, 5))):
        lines = [
            f"{who},{hosts[0].url}/photos/{who.lower().replace(' ', '_')}/{n}.jpg"
            for who in IDENTITIES
            for n in indexes
        ]
        path = root / f"urls-{i}.txt"
        path.write_text("\n".join(lines) + "\n")
        world.url_lists.append(str(path))
    raw = base_params()
    level = world.template(1)
    for stage in ("crawl_avatars", "crawl_faces"):
        run(level, stage, raw)
    for number, stage in ((2, "align"), (3, "pack")):
        level = copy(level, world.template(number))
        run(level, stage, raw)
    yield world
    for host in hosts:
        host.__exit__(None, None, None)


# ---- the cases -------------------------------------------------------------------------------------------------

Value = Any  # a param value, or a function of (world, the earlier run's folder) that gives one


@dataclass(frozen=True)
class Case:
    stage: str
    key: str  # dotted, from the top of params.yaml
    b: Value
    a: dict[str, Value] = field(default_factory=dict)  # params of the earlier run, beyond the base
    also: dict[str, Value] = field(default_factory=dict)  # params that go with b (a source needs its input)
    speed_only: bool = False

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.key.removeprefix(SECTION[self.stage] + '.')}"


def median_of(pattern: str, measure: Callable[[Path], float]) -> Callable[[World, Path], int]:
    """A value that splits the earlier run's files in two: the median of `measure` over the files matching it."""

    def value(world: World, earlier: Path) -> int:
        return int(np.median([measure(p) for p in earlier.glob(pattern)]))

    return value


def size(path: Path) -> float:
    return path.stat().st_size


def pixels(path: Path) -> float:
    image = cv2.imread(str(path))
    return float(image.shape[0] * image.shape[1])


def short_side(path: Path) -> float:
    image = cv2.imread(str(path))
    return float(min(image.shape[:2]) + 1)


def most_faces(world: World, earlier: Path) -> int:
    frame = pd.read_parquet(earlier / "data/aligned/faces.parquet").query("status == 'ok'")
    return int(frame.groupby("identity").size().max())


def server(i: int) -> Callable[[World, Path], str]:
    return lambda world, earlier: world.servers[i]


def folder(i: int) -> Callable[[World, Path], str]:
    return lambda world, earlier: world.folders[i]


def url_list(i: int) -> Callable[[World, Path], str]:
    return lambda world, earlier: world.url_lists[i]


def source(name: str, key: str, value: Value) -> dict[str, Value]:
    """Earlier-run params for a face source and the input it reads."""
    return {"crawl.faces.source": name, f"crawl.faces.{key}": value}


FAULTS = {
    "error_429": 0.4,
    "error_500": 0.4,
    "error_503": 0.4,
    "truncated": 0.4,
    "wrong_type": 0.3,
    "corrupt": 0.3,
    "oversized": 0.3,
}


def crawl_cases(stage: str) -> list[Case]:
    """The sandbox keys a crawl reads: what it serves, and how fast."""
    cases = [Case(stage, f"sandbox.faults.{name}", rate) for name, rate in FAULTS.items()]
    cases += [
        Case(stage, "sandbox.faults.seed", 1, a={"sandbox.faults.error_503": 0.4}),
        Case(stage, "sandbox.faults.latency_ms", 20, speed_only=True),
        Case(stage, "sandbox.faults.retry_after_s", 0.02, a={"sandbox.faults.error_503": 0.4}, speed_only=True),
        Case(stage, "sandbox.render_cache", 0, speed_only=True),
    ]
    section = SECTION[stage]
    cases += [
        Case(stage, f"{section}.timeout_s", 5),
        Case(stage, f"{section}.retries", 0),
        Case(stage, f"{section}.backoff_s", 0.02),
        Case(stage, f"{section}.backoff_max_s", 1),
        Case(stage, f"{section}.concurrency", 1, speed_only=True),
        Case(stage, f"{section}.partition", "1/2"),
    ]
    return cases


CASES = [
    *crawl_cases("crawl_avatars"),
    Case("crawl_avatars", "crawl.avatars.endpoint", server(0)),
    Case("crawl_avatars", "crawl.avatars.count", 4),
    Case("crawl_avatars", "crawl.avatars.seed", 1),
    Case("crawl_avatars", "crawl.avatars.genders", [2]),
    Case("crawl_avatars", "crawl.avatars.styles", [5]),
    Case("crawl_avatars", "crawl.avatars.trait_presence", "uniform"),
    Case("crawl_avatars", "crawl.avatars.trait_presence", {"hat": 1.0, "beard": 0.5}),
    Case("crawl_avatars", "crawl.avatars.scale", 2),
    Case("crawl_avatars", "crawl.avatars.max_bytes", median_of("data/raw/avatars/*/*.png", size)),
    Case("crawl_avatars", "crawl.avatars.max_pixels", 256 * 256),
    Case("crawl_avatars", "crawl.avatars.min_size", 256),
    *crawl_cases("crawl_faces"),
    Case("crawl_faces", "sandbox.seed", 1),
    Case("crawl_faces", "sandbox.photos", folder(0)),
    Case("crawl_faces", "sandbox.photos_per_identity", 3),
    Case("crawl_faces", "crawl.faces.source", "folder", also={"crawl.faces.folder": folder(0)}),
    Case("crawl_faces", "crawl.faces.identities", ["Avery Quinn", "Casey Lindqvist"]),
    Case("crawl_faces", "crawl.faces.identities", 3),  # the sandbox's first three people: two of them crawled before
    Case("crawl_faces", "crawl.faces.per_identity", 3),
    Case("crawl_faces", "crawl.faces.min_per_identity", 4),
    Case("crawl_faces", "crawl.faces.min_size", median_of("data/raw/faces/*/*", short_side)),
    Case("crawl_faces", "crawl.faces.near_duplicate_distance", 64),
    Case("crawl_faces", "crawl.faces.engine_url", server(1), a=source("bing", "engine_url", server(0))),
    Case("crawl_faces", "crawl.faces.urls_file", url_list(1), a=source("urls", "urls_file", url_list(0))),
    Case("crawl_faces", "crawl.faces.folder", folder(1), a=source("folder", "folder", folder(0))),
    Case("crawl_faces", "crawl.faces.max_bytes", median_of("data/raw/faces/*/*", size)),
    Case("crawl_faces", "crawl.faces.max_pixels", median_of("data/raw/faces/*/*", pixels)),
    Case("align", "align.size", 96),
    Case("align", "align.left_eye", [0.3, 0.35]),
    Case("align", "align.right_eye", [0.7, 0.35]),
    Case("align", "align.eye_method", "geometry"),
    Case("align", "align.eyes_required", True),
    Case("align", "align.multiple_faces", "reject"),
    Case("align", "align.dominance", 1.2),
    Case("align", "align.min_face", 80),
    Case("align", "align.detect_max_side", 320),
    Case("align", "align.equalize", ["global"]),
    Case("align", "align.scale_factor", 1.2),
    Case("align", "align.coarse_scale_factor", None),
    Case("align", "align.verify", False),
    Case("align", "align.verify_votes", 30),
    Case("align", "align.blur_threshold", 150),
    Case("align", "align.try_rotations", []),
    Case("align", "align.workers", 2, speed_only=True),
    Case("align", "align.chunk_size", 1, speed_only=True),
    Case("pack", "pack.shard_size", 3),
    Case("pack", "pack.photo_size", 64),
    Case("pack", "pack.val_fraction", 0.3),
    Case("pack", "pack.test_fraction", 0.3),
    Case("pack", "pack.people_val_fraction", 0.0),  # of the 4 people: 3 trained, the first held out for test
    Case("pack", "pack.people_test_fraction", 0.0),  # 3 trained, the first held out for val
    Case("pack", "pack.seed", 1),
    Case("pack", "pack.near_duplicate_distance", 64),
    Case("pack", "pack.min_faces_per_identity", most_faces),
    Case("pack", "pack.workers", 1, speed_only=True),
]  # fmt: skip


def resolve(values: dict[str, Value], world: World, earlier: Path) -> dict[str, Any]:
    return {k: v(world, earlier) if callable(v) else v for k, v in values.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_changed_param_gives_what_a_clean_run_gives(case: Case, world: World, tmp_path: Path) -> None:
    inputs = world.template(LEVEL[case.stage] - 1) if LEVEL[case.stage] > 1 else None
    base = base_params()
    if case.a:  # an earlier run of its own, on the shared inputs
        earlier = copy(inputs, tmp_path / "earlier") if inputs else tmp_path / "earlier"
        a = with_values(base, resolve(case.a, world, earlier))
        run(earlier, case.stage, a)
    else:
        earlier, a = copy(world.template(LEVEL[case.stage]), tmp_path / "earlier"), base
    b = with_values(a, resolve({case.key: case.b, **case.also}, world, earlier))
    assert b != a, f"{case.id}: the new value equals the old one"
    on_top = copy(earlier, tmp_path / "on_top")
    run(on_top, case.stage, b)
    clean = copy(inputs, tmp_path / "clean") if inputs else tmp_path / "clean"
    run(clean, case.stage, b)
    assert outputs(on_top, case.stage) == outputs(clean, case.stage)
    if case.speed_only:
        assert data_only(outputs(clean, case.stage)) == data_only(outputs(earlier, case.stage))


# ---- every param has a case ----------------------------------------------------------------------------------------

OUTPUT_PATHS = {"out_dir", "manifest", "metrics", "details", "run_log", "samples"}
NOT_CHANGEABLE = {"sandbox.host"}  # Literal["127.0.0.1"]: the sandbox never listens beyond loopback
FAULT_KEYS = {f"faults.{k}" for k in FaultParams.model_fields}
SANDBOX_KEYS = {  # the sandbox keys each crawl reads
    "crawl_avatars": {"render_cache", *FAULT_KEYS},
    "crawl_faces": {"seed", "photos", "photos_per_identity", "render_cache", *FAULT_KEYS},
}


def test_every_param_of_every_data_stage_has_a_case() -> None:
    models = {
        "crawl_avatars": CrawlAvatarsParams,
        "crawl_faces": CrawlFacesParams,
        "align": AlignParams,
        "pack": PackParams,
    }
    expected = set()
    for stage, model in models.items():
        expected |= {(stage, f"{SECTION[stage]}.{name}") for name in model.model_fields if name not in OUTPUT_PATHS}
        expected |= {(stage, f"sandbox.{key}") for key in SANDBOX_KEYS.get(stage, ())}
    assert {(c.stage, c.key) for c in CASES} == expected
    assert all(f"sandbox.{k}" not in NOT_CHANGEABLE for keys in SANDBOX_KEYS.values() for k in keys)
    assert set(SandboxParams.model_fields) - {"faults"} == {k.removeprefix("sandbox.") for k in NOT_CHANGEABLE} | {
        "seed", "photos", "photos_per_identity", "render_cache"
    }  # fmt: skip


# ---- a code change recomputes ----------------------------------------------------------------------------------------


def run_copy(code: Path, root: Path, stage: str) -> dict[str, Any]:
    """Run a stage from a copy of the code, in a subprocess; returns its run log."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads((root / f"reports/runs/{stage}.json").read_text())


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes nothing but the source\n")


def test_editing_a_module_a_stage_imports_recomputes_its_results(world: World, tmp_path: Path) -> None:
    code = tmp_path / "code"
    for part in ("pipeline", "stages"):
        shutil.copytree(REPO / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    root = copy(world.template(1), tmp_path / "data")
    (root / "params.yaml").write_text(yaml.safe_dump(base_params()))
    first = run_copy(code, root, "align")
    faces = first["faces"]["reused"] + first["faces"]["computed"]
    before = outputs(root, "align")
    assert run_copy(code, root, "align")["faces"] == {"reused": faces, "computed": 0, "pruned": 0}
    edit(code / "pipeline/dataset/splits.py")  # align does not import it: nothing to redo
    assert run_copy(code, root, "align")["faces"]["computed"] == 0
    edit(code / "pipeline/faces/detect.py")
    assert run_copy(code, root, "align")["faces"] == {"reused": 0, "computed": faces, "pruned": 0}
    after = outputs(root, "align")  # a comment changes no crop; only the manifests' keys name the new code
    assert {k: v for k, v in after.items() if not k.endswith(".parquet")} == {
        k: v for k, v in before.items() if not k.endswith(".parquet")
    }
    for name in ("faces", "avatars"):
        old, new = (pd.read_parquet(io.BytesIO(files[f"data/aligned/{name}.parquet"])) for files in (before, after))
        assert not set(new["result_key"]) & set(old["result_key"])  # every row was made again, by the new code
        pd.testing.assert_frame_equal(new.drop(columns="result_key"), old.drop(columns="result_key"))
    crawled = run_copy(code, root, "crawl_avatars")
    assert (crawled["reused"], crawled["fetched"]) == (6, 0)
    edit(code / "pipeline/crawl/validate.py")
    crawled = run_copy(code, root, "crawl_avatars")  # the verdicts are made again, from the bytes already there
    assert (crawled["reused"], crawled["rederived"], crawled["fetched"]) == (0, 6, 0)
