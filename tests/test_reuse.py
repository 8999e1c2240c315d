"""The shared reuse rule: code versions follow the sources a module imports; keys change with every part."""

from __future__ import annotations

import pytest

from pipeline.core import reuse


def test_module_sources_follow_transitive_and_local_imports() -> None:
    names = {p.relative_to(reuse.PACKAGE_ROOT).as_posix() for p in reuse.module_sources("pipeline.faces.align_run")}
    # direct, transitive (align -> detect), package __init__ files, and a function-local import (sandbox.avatar)
    assert {"faces/align_run.py", "faces/align.py", "faces/detect.py", "faces/__init__.py", "__init__.py"} <= names
    assert "sandbox/avatar.py" in names
    assert not any(name.startswith("crawl/") for name in names)


def test_code_version_changes_when_an_imported_source_changes(tmp_path, monkeypatch) -> None:
    package = tmp_path / "pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from pipeline.sub import b\n")
    (package / "sub" / "b.py").write_text("X = 1\n")
    (package / "sub" / "c.py").write_text("Y = 1\n")
    monkeypatch.setattr(reuse, "PACKAGE_ROOT", package)
    reuse.module_sources.cache_clear()
    reuse.code_version.cache_clear()
    before = reuse.code_version("pipeline.sub.a")
    (package / "sub" / "c.py").write_text("Y = 2\n")  # not imported by a
    reuse.code_version.cache_clear()
    assert reuse.code_version("pipeline.sub.a") == before
    (package / "sub" / "b.py").write_text("X = 2\n")
    reuse.code_version.cache_clear()
    assert reuse.code_version("pipeline.sub.a") != before
    reuse.module_sources.cache_clear()
    reuse.code_version.cache_clear()


@pytest.mark.parametrize("part", ["input", "params", "code"])
def test_result_key_changes_with_each_part(part: str) -> None:
    base = {"input": "ab" * 32, "params": {"size": 152, "eyes": [0.35, 0.35]}, "code": "0123"}
    changed = dict(base)
    changed[part] = {"input": "cd" * 32, "params": {"size": 96, "eyes": [0.35, 0.35]}, "code": "4567"}[part]
    assert reuse.result_key(base["input"], base["params"], base["code"]) != reuse.result_key(
        changed["input"], changed["params"], changed["code"]
    )
    # key order never matters
    assert reuse.result_key("x", {"a": 1, "b": 2}, "c") == reuse.result_key("x", {"b": 2, "a": 1}, "c")
