"""Shared fixtures: the sandbox served on 127.0.0.1 for the length of a test, and paths to the shared data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import FaultParams, SandboxParams
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent


# Bytecode, tool caches and the venv are the only things a test run may add to the checkout.
_DEBRIS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def _checkout_files() -> dict[str, tuple[int, int]]:
    files = {}
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _DEBRIS and not d.endswith(".egg-info")]
        if os.path.basename(folder) == ".dvc":
            dirs[:] = [d for d in dirs if d != "tmp"]  # DVC's own lock and timestamp files, gitignored by DVC
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            files[os.path.relpath(os.path.join(folder, name), REPO)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched() -> Iterator[None]:
    """Tests write only under tmp_path: the session fails if any file in the checkout appeared or changed."""
    before = _checkout_files()
    yield
    after = _checkout_files()
    touched = sorted(path for path in after.keys() | before.keys() if before.get(path) != after.get(path))
    assert not touched, f"tests wrote into the checkout (write under tmp_path instead): {touched[:20]}"


@pytest.fixture
def sandbox_server() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers with given params; every one is stopped when the test ends."""
    started: list[SandboxServer] = []

    def start(faults: FaultParams | None = None, **sandbox: object) -> SandboxServer:
        cfg = SandboxParams(faults=faults or FaultParams(), **sandbox)  # type: ignore[arg-type]
        server = SandboxServer(cfg).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def faces_dev() -> Path:
    path = SHARED_DATA / "faces-dev"
    if not path.is_dir():
        pytest.skip(f"shared photo set not found at {path}")
    return path


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed; its output is in the failure message."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


SIGNAL_DRIVER = """
import os, signal
from pipeline.core import manifest
append = manifest.Journal.append
done = 0
def append_then_signal(self, row):
    global done
    kept = append(self, row)
    done += 1
    if done == {rows}:
        os.kill(os.getpid(), signal.{signal})
    return kept
manifest.Journal.append = append_then_signal
from stages.{stage} import main
main()
"""


def signal_after_journal_rows(root: Path, stage: str, rows: int, sig: str) -> subprocess.CompletedProcess[str]:
    """Run `stages.<stage>` in `root` and send it `sig` ("SIGKILL", "SIGINT") right after its journal took `rows`
    rows: a `kill -9` or a Ctrl-C mid-run at a known point, not after a delay."""
    driver = root / "signal_driver.py"
    driver.write_text(SIGNAL_DRIVER.format(rows=rows, stage=stage, signal=sig))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(driver)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        # a Ctrl-C reaches a stage that handles it, even when the test runner ignores SIGINT (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def kill_after_journal_rows(root: Path, stage: str, rows: int) -> None:
    """`kill -9` of a stage right after its journal took `rows` rows; what the journal flushed is what a resume can
    reuse."""
    result = signal_after_journal_rows(root, stage, rows, "SIGKILL")
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr


def huge_png(path: Path, side: int = 12_000) -> Path:
    """A PNG whose header declares side x side pixels, with almost no data: what a decompression bomb looks like to
    a reader that checks the header before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


def make_clone(root: Path) -> dict[str, str]:
    """The repository's tracked files (as in the working tree) committed into a fresh git repo at `root`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(root)}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run(["git", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "clone"], root, env)
    return env


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory, worker_id: str, testrun_uid: str) -> Path:
    """One `dvc repro` of every stage at tiny scale (`shrink`) in a fresh clone, committed: built once per test run
    (the first pytest-xdist worker builds it under a lock, the others wait) and shared read-only. A test that changes
    something works on its own copy (`copy_pipeline`)."""
    from filelock import FileLock

    if worker_id == "master":  # not under xdist: this session's own folder
        root = tmp_path_factory.mktemp("tiny-pipeline") / "clone"
    else:  # every worker of this run sees the same folder
        root = tmp_path_factory.getbasetemp().parent / f"tiny-pipeline-{testrun_uid}" / "clone"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / "build.lock")):
        if not (root.parent / "done").exists():
            env = make_clone(root)
            shrink(root, avatars=24)
            run([str(BIN / "dvc"), "repro"], root, env)
            run(["git", "add", "-A"], root, env)
            run(["git", "commit", "-qm", "tiny pipeline"], root, env)
            (root.parent / "done").touch()
    return root


def copy_pipeline(source: Path, target: Path) -> dict[str, str]:
    """A copy of `tiny_pipeline` (git history, DVC cache, outputs) at `target`; returns the environment to run in it."""
    shutil.copytree(source, target, symlinks=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(target)}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh git clone of the working tree's tracked files, and the environment to run DVC in it."""
    root = tmp_path / "clone"
    return root, make_clone(root)


def shrink(root: Path, avatars: int = 24, identities: int = 5, per_identity: int = 16, **align: object) -> None:
    """Cut the default params.yaml of a clone down to a pipeline that runs in seconds."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["crawl"]["avatars"]["count"] = avatars
    faces = params["crawl"]["faces"]
    faces.update(identities=identities, per_identity=per_identity, min_per_identity=5)  # the sandbox's first people
    params["align"].update(align)
    params["pack"].update(min_faces_per_identity=4, shard_size=16)
    # pack's default shares of the 5 people: 3 to train f on, 1 held out whole for val, 1 for test
    params["pretrain_f"].update(input_size=64, steps=20, batch_size=8, eval_every=10, checkpoint_every=10)
    params["pretrain_f"]["avatars"]["batch_size"] = 8
    params["pretrain_f"]["runtime"]["threads"] = 1  # one thread: the same weights on every run
    if "cam" in params:
        params["cam"].update(input_size=64, steps=20, batch_size=8, eval_every=10, checkpoint_every=10, overlays=4)
        params["cam"]["runtime"]["threads"] = 1
    params["train"].update(steps=10, batch_size=8, eval_every=5, checkpoint_every=5, log_every=5)
    params["train"]["runtime"]["threads"] = 1
    params["dcgan"].update(ngf=8, ndf=8)
    params["dtn"].update(ngf=8, ndf=8, grid_photos=4, trait_steps=20)
    params["avatar_params"].update(steps=10, batch_size=8, eval_every=5, checkpoint_every=5, hidden=16, grid_people=2)
    params["avatar_params"]["runtime"]["threads"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_tiny_faces(root: Path, classes: int = 4, per_class: tuple[int, int, int] = (24, 4, 4), side: int = 40) -> Path:
    """Packed `faces` shards of `classes` made-up identities a small net tells apart: a coloured disc whose colour
    and place name the identity, on noise. per_class = (train, val, test) images of each. Returns `root`."""
    import numpy as np
    import pandas as pd

    from pipeline.core.manifest import write_manifest
    from pipeline.dataset.shards import write_dataset

    rng = np.random.default_rng(0)
    rows, images = [], []
    yy, xx = np.mgrid[0:side, 0:side]
    for label in range(classes):
        colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 40) % 256])
        cx, cy = side * (0.3 + 0.4 * (label % 2)), side * (0.3 + 0.4 * ((label // 2) % 2))
        for split, count in zip(("train", "val", "test"), per_class, strict=True):
            for _ in range(count):
                image = rng.integers(0, 120, (side, side, 3))
                disc = (xx - cx - rng.normal(0, 2)) ** 2 + (yy - cy - rng.normal(0, 2)) ** 2 < (side * 0.22) ** 2
                image[disc] = np.clip(colour + rng.normal(0, 20, 3), 0, 255)
                images.append(image.astype(np.uint8))
                rows.append({"split": split, "label": label, "identity": f"person_{label}"})
    frame = pd.DataFrame(rows)
    index = write_dataset(frame, lambda i: (images[i], {}), root, shard_size=16)
    write_manifest(index.to_dict("records"), root / "index.parquet", list(index.columns), {})
    return root


@pytest.fixture
def tiny_faces(tmp_path: Path) -> Path:
    """A pack output folder (`<it>/faces`) of tiny, learnable face shards."""
    make_tiny_faces(tmp_path / "shards" / "faces")
    return tmp_path / "shards"


# The test files that take longest (`make test` prints the slowest tests), started first: with two workers taking a
# file each at a time, the run then ends on short files instead of one worker finishing a long one alone.
LONGEST_FIRST = (
    "test_e2e_dvc.py",
    "test_lookalike.py",
    "test_quality_eval.py",
    "test_train_dcgan.py",
    "test_pretrain_f.py",
    "test_train_cam.py",
    "test_dtn.py",
    "test_failure_paths.py",
    "test_training_failures.py",
    "test_reuse_property.py",
    "test_landmark_eval.py",
    "test_sandbox_render.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file is kept
