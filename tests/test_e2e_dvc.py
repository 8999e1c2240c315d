"""End to end: the real `dvc repro` of the data stages in a temporary clone, at small scale."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The repository's tracked files (as in the working tree) committed into a fresh git repo."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    root = tmp_path / "clone"
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
    return root, env


def shrink(root: Path, avatars: int = 24, identities: int = 3, per_identity: int = 16) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["crawl"]["avatars"]["count"] = avatars
    faces = params["crawl"]["faces"]
    faces.update(identities=faces["identities"][:identities], per_identity=per_identity, min_per_identity=5)
    params["pack"].update(min_faces_per_identity=4, shard_size=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_data_stages(clone: tuple[Path, dict[str, str]]) -> None:
    root, env = clone
    shrink(root, avatars=24)
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], root, env)
    faces = json.loads((root / "metrics/crawl_faces.json").read_text())
    assert faces["identities"] == 3 and faces["candidates"] == 48 and faces["saved"] >= 40
    frame = pd.read_parquet(root / "data/raw/faces.parquet")
    assert len(frame) == 48 and frame["synthetic"].all()
    align = json.loads((root / "metrics/align.json").read_text())
    assert align["avatars"]["aligned"] == 24 and align["faces"]["input"] == faces["saved"]
    pack = json.loads((root / "metrics/pack.json").read_text())
    assert pack["identities"] == 3 and pack["avatars_total"] == 24
    index = pd.read_parquet(root / "data/shards/faces/index.parquet")
    assert len(index) == pack["faces_train"] + pack["faces_val"] + pack["faces_test"] == align["faces"]["aligned"]
    metrics = json.loads((root / "metrics/crawl_avatars.json").read_text())
    assert metrics["requested"] == metrics["saved"] == 24 and metrics["failed"] == 0
    frame = pd.read_parquet(root / "data/raw/avatars.parquet")
    assert len(frame) == 24 and (frame.status == "ok").all()
    assert frame["url"].str.startswith("sandbox:/avatar-builder-v3/preview/head?").all()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["crawl_avatars"]["params"]["params.yaml"]["crawl.avatars"]["count"] == 24
    second = run([dvc, "repro"], root, env)
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    # A sandbox key only the face crawl reads leaves the avatar crawl (and its descendants' reason) untouched.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sandbox"]["photos_per_identity"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = json.loads(run([dvc, "status", "--json"], root, env).stdout)
    assert "crawl_faces" in changed and "crawl_avatars" not in changed, changed
    params["sandbox"]["photos_per_identity"] -= 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shrink(root, avatars=30)  # a params change re-runs the stage, which resumes from its persisted outputs
    run([dvc, "repro", "crawl_avatars"], root, env)
    metrics = json.loads((root / "metrics/crawl_avatars.json").read_text())
    assert (metrics["resumed"], metrics["fetched"], metrics["saved"]) == (24, 6, 30)
    shown = json.loads(run([dvc, "metrics", "show", "--json"], root, env).stdout)
    assert shown[""]["data"]["metrics/crawl_avatars.json"]["data"]["saved"] == 30
