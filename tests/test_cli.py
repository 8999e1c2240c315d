"""The `i2c` command line: every `-S` help shows a real key of that command, and errors are messages."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app, with_overrides
from pipeline.core.params import DEFAULT_PARAMS, Params

runner = CliRunner()


def leaf_commands() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):  # a group (typer ships its own click, so no isinstance check)
            for name, sub in sorted(command.commands.items()):
                walk(sub, f"{path} {name}".strip())
        else:
            found[path] = command

    walk(typer.main.get_command(app), "")
    return found


SET_COMMANDS = {path: cmd for path, cmd in leaf_commands().items() if any(p.name == "set_" for p in cmd.params)}


def test_every_command_with_overrides_is_found() -> None:
    assert {
        "crawl avatars",
        "crawl faces",
        "align run",
        "align eval",
        "pack",
        "sandbox serve",
        "pretrain-f",
        "lookalike",
        "train-cam",
        "cam",
        "train-dtn",
    } <= set(SET_COMMANDS)


@pytest.mark.parametrize("path", sorted(SET_COMMANDS))
def test_set_help_example_is_a_valid_override_for_that_command(path: str) -> None:
    result = runner.invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # rich wraps the help inside a box
    example = re.search(r"e\.g\. -S (\S+=\S+)", text)
    assert example, f"`i2c {path} --help` shows no -S example"
    key = example.group(1).split("=")[0]
    section = key.split(".")[0]
    assert section in Params.model_fields
    assert with_overrides(DEFAULT_PARAMS, [example.group(1)])  # the key exists and the value validates


def test_bad_override_is_a_message_not_a_traceback() -> None:
    result = runner.invoke(app, ["pack", "-S", "pack.shard_size=0"])
    assert result.exit_code == 1
    assert "pack.shard_size: Input should be greater than or equal to 1 (got 0)" in result.output
    assert "Traceback" not in result.output
