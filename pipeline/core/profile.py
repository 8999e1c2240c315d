"""Params profiles: a partial params file (the paper scale, CI's smoke scale) merged into params.yaml, comments kept.

Usage: python -m pipeline.core.profile params-paper.yaml [--params params.yaml]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from pipeline.core.params import ParamsError, parse_params
from pipeline.core.storage import atomic_write_text


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: mappings section by section, any other value replaced whole."""
    merged = dict(base)
    for key, value in overrides.items():
        inner = base.get(key)
        merged[key] = merge(inner, value) if isinstance(value, Mapping) and isinstance(inner, Mapping) else value
    return merged


def leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the keys a profile sets."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(leaves(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return flat


def _assign(node: Any, overrides: Mapping[str, Any]) -> None:
    """Set the overrides inside a ruamel round-trip tree, so the file keeps its comments and order."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(node.get(key), Mapping):
            _assign(node[key], value)
        else:
            node[key] = value


def apply_profile(params_file: Path, profile_file: Path) -> list[str]:
    """Merge the profile into the params file in place, after validating the result.

    Returns:
        The dotted keys the profile set.

    Raises:
        ParamsError: when the profile names an unknown key or a bad value (nothing is written then).
    """
    profile = yaml.safe_load(profile_file.read_text(encoding="utf-8")) or {}
    if not isinstance(profile, Mapping):
        raise ParamsError(f"{profile_file}: expected a mapping of params sections, got {type(profile).__name__}")
    current = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    parse_params(merge(current, profile), f"{params_file} with {profile_file}")
    round_trip = YAML()
    round_trip.width = 120
    round_trip.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own layout
    round_trip.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    tree = round_trip.load(params_file.read_text(encoding="utf-8"))
    _assign(tree, profile)
    buffer = io.StringIO()
    round_trip.dump(tree, buffer)
    atomic_write_text(params_file, buffer.getvalue())
    return list(leaves(profile))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="a partial params file, e.g. params-paper.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file to update")
    args = parser.parse_args(argv)
    try:
        keys = apply_profile(args.params, args.profile)
    except (ParamsError, OSError, yaml.YAMLError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    print(f"profile: {args.profile} set {len(keys)} keys in {args.params}; `git checkout {args.params}` undoes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
