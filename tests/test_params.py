"""params.yaml validation: the shipped file is valid, and every kind of mistake names its dotted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def shipped() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_shipped_params_equal_the_code_defaults() -> None:
    """params.yaml shows every default the code has: a user reading it sees what an omitted key means."""
    shipped_params = load_params(REPO / "params.yaml").model_dump(mode="json")
    code_defaults = parse_params({}).model_dump(mode="json")
    assert shipped_params == code_defaults


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("crawl", "avatars", "concurrency"),
            0,
            "crawl.avatars.concurrency: Input should be greater than or equal to 1",
        ),
        (("crawl", "avatars", "count"), "many", "crawl.avatars.count: Input should be a valid integer"),
        (("crawl", "avatars", "genders"), [3], "crawl.avatars.genders.0: Input should be 1 or 2"),
        (("crawl", "avatars", "endpoint"), "ftp://x", "crawl.avatars.endpoint: Value error, must be 'sandbox' or"),
        (("sandbox", "faults", "error_429"), 1.5, "sandbox.faults.error_429: Input should be less than or equal to 1"),
        (("crawl", "avatars", "concurency"), 8, "crawl.avatars.concurency: unknown key"),
        (("crawl", "avatars", "trait_presence"), "peoples", "crawl.avatars.trait_presence: Input should be 'people'"),
        (("crawl", "faces", "identities"), 0, "crawl.faces.identities: Input should be greater than or equal to 1"),
        # strict: a YAML string is not a number, and true is not 1 (YAML reads an unquoted 1e-3 as text)
        (("train", "steps"), True, "train.steps: Input should be a valid integer"),
        (("train", "lr"), "1e-3", "train.lr: Input should be a valid number"),
        (("train", "batch_size"), "32", "train.batch_size: Input should be a valid integer"),
        (("pretrain_f", "input_size"), "128", "pretrain_f.input_size: Input should be 64, 128 or 152"),
        (("align", "left_eye"), ["0.35", 0.35], "align.left_eye.0: Input should be a valid number"),
    ],
)
def test_bad_value_names_dotted_key(path: tuple[str, ...], value: object, expected: str) -> None:
    raw = shipped()
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert expected in str(info.value)
    bad = value[0] if isinstance(value, list) else value  # a list is reported by its first bad element
    assert f"(got {bad!r})" in str(info.value) or "unknown key" in str(info.value)
    if isinstance(bad, str) and "valid number" in str(info.value):
        assert "write the number without quotes, with a dot" in str(info.value)


def test_numbers_stay_numbers_and_lists_become_tuples() -> None:
    raw = shipped()
    raw["train"]["lr"] = 1  # an int is a float
    raw["align"]["try_rotations"] = [10, -10]
    params = parse_params(raw)
    assert params.train.lr == 1.0 and params.align.try_rotations == (10.0, -10.0)


def test_a_number_of_identities_is_for_the_sandbox_only() -> None:
    raw = shipped()
    raw["crawl"]["faces"].update(source="bing", identities=12)
    with pytest.raises(ParamsError, match=r"crawl.faces: .*identities 12 names synthetic sandbox people; source"):
        parse_params(raw)
    raw["crawl"]["faces"]["identities"] = ["Ada Lovelace"]
    assert parse_params(raw).crawl.faces.identities == ("Ada Lovelace",)


def test_trait_presence_is_a_name_or_shares_of_traits() -> None:
    raw = shipped()
    raw["crawl"]["avatars"]["trait_presence"] = {"hat": 0.1, "glasses": 1.5}
    with pytest.raises(ParamsError, match=r"crawl.avatars.trait_presence.glasses: Input should be less .*1.5"):
        parse_params(raw)
    raw["crawl"]["avatars"]["trait_presence"] = {"hat": 0.1, "beard": 1}
    assert parse_params(raw).crawl.avatars.trait_presence == {"hat": 0.1, "beard": 1.0}


def test_fault_rates_must_be_exclusive() -> None:
    raw = shipped()
    raw["sandbox"]["faults"].update(error_429=0.7, corrupt=0.6)
    with pytest.raises(ParamsError, match=r"sandbox.faults: Value error, fault rates add up to 1.300"):
        parse_params(raw)


def test_unknown_section_and_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="trian: unknown key"):
        parse_params({"trian": {"lr": 1}})
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("crawl: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_stage_refuses_bad_params_before_any_work(tmp_path: Path) -> None:
    raw = shipped()
    raw["crawl"]["avatars"]["count"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "stages.crawl_avatars"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "crawl.avatars.count: Input should be greater than or equal to 1 (got -5)" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_cli_set_overrides_are_validated_like_params_yaml() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["crawl", "avatars", "--params", str(REPO / "params.yaml"), "-S",
                                      "crawl.avatars.count=0"])  # fmt: skip
    assert result.exit_code == 1
    assert "crawl.avatars.count: Input should be greater than or equal to 1 (got 0)" in result.output
    result = CliRunner().invoke(app, ["pack", "--params", str(REPO / "params.yaml"), "-S", "pack.shard_size"])
    assert result.exit_code == 1 and "expected KEY=VALUE" in result.output


@pytest.mark.parametrize("section", [("crawl", "faces"), ("pack",)])
def test_near_duplicate_distance_has_one_bound_everywhere(section: tuple[str, ...]) -> None:
    """Both sections compare the same 256-bit dHash, so both accept 0..256 and nothing else."""

    def with_distance(value: int) -> dict:
        raw = shipped()
        node = raw
        for part in section:
            node = node[part]
        node["near_duplicate_distance"] = value
        return raw

    assert parse_params(with_distance(256))
    with pytest.raises(ParamsError, match=rf"{'.'.join(section)}.near_duplicate_distance: .*equal to 256 \(got 257\)"):
        parse_params(with_distance(257))
