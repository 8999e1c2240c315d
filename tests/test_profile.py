"""Params profiles (params-paper.yaml, params-hour.yaml, params-real.yaml, CI's .ci/smoke.yaml) merge into params.yaml,
validated, comments kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import ParamsError, load_params
from pipeline.core.profile import apply_profile, leaves, main, merge

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["params-paper.yaml", "params-hour.yaml", "params-real.yaml", ".ci/smoke.yaml"])
def test_a_profile_sets_its_keys_and_keeps_every_other_line(tmp_path: Path, profile: str) -> None:
    params = shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = yaml.safe_load(Path(params).read_text())
    overrides = yaml.safe_load((REPO / profile).read_text())
    keys = apply_profile(Path(params), REPO / profile)
    after = yaml.safe_load(Path(params).read_text())
    assert after == merge(before, overrides) and set(keys) == set(leaves(overrides))
    load_params(params)  # still valid
    changed = {k for k, v in leaves(after).items() if leaves(before).get(k) != v}
    assert changed and changed <= set(keys)
    old_lines, new_lines = (REPO / "params.yaml").read_text().splitlines(), Path(params).read_text().splitlines()
    comments = [line.split("#", 1)[1] for line in old_lines if "#" in line]
    assert comments == [line.split("#", 1)[1] for line in new_lines if "#" in line]


def test_the_paper_profile_has_the_seeds_numbers(tmp_path: Path) -> None:
    params = shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_profile(Path(params), REPO / "params-paper.yaml")
    paper = load_params(params)
    assert paper.crawl.faces.identities == 60 and paper.crawl.faces.per_identity == 150
    assert paper.sandbox.photos_per_identity >= paper.crawl.faces.per_identity
    assert (paper.crawl.avatars.count, paper.align.size, paper.pack.shard_size) == (100_000, 152, 100)


def test_a_bad_profile_names_the_key_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))
    profile = tmp_path / "bad.yaml"
    profile.write_text("crawl:\n  avatars:\n    count: -3\n    colour: red\n")
    with pytest.raises(ParamsError, match=r"crawl\.avatars\.count.*\n.*crawl\.avatars\.colour: unknown key"):
        apply_profile(params, profile)
    assert params.read_text() == (REPO / "params.yaml").read_text()
    assert main([str(profile), "--params", str(params)]) == 1
    assert "crawl.avatars.colour: unknown key" in capsys.readouterr().err


def test_merge_replaces_leaves_and_keeps_siblings() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [9]}}) == {"a": {"b": 1, "c": [9]}, "d": 3}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 3}
