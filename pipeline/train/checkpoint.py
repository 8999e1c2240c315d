"""Resuming a training run: its key (params, code, data), and a checkpoint resumed only when the key matches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.checkpoint import load_checkpoint
from pipeline.core.reuse import canonical_json, result_key, shaping_params

CHECKPOINT_FILE = "last.pt"  # the resume state in a stage's checkpoint_dir


@dataclass(frozen=True)
class RunKey:
    """What a training result depends on: the params that shape it, the code version and the input data.

    Attributes:
        params: the resolved params that shape the result (paths and log intervals left out).
        code: `pipeline.core.reuse.code_version` of the modules that train.
        data: an id of the input data (the shards' checksums), or {input name: id} when there are several (the
            shards, the f.pt a stage stands on), so that a stale checkpoint can name what changed.
    """

    params: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    data: str | dict[str, str] = ""

    @property
    def value(self) -> str:
        data = self.data if isinstance(self.data, str) else canonical_json(self.data)
        return result_key(data, self.params, self.code)

    def record(self) -> dict[str, Any]:
        return {"params": self.params, "code": self.code, "data": self.data, "key": self.value}


def loop_params(section: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The params of a training section that shape its weights: all but `ignore` and `runtime.threads` (threads change
    the speed, not the result)."""
    params = shaping_params(section, ignore)
    if isinstance(params.get("runtime"), Mapping):
        params["runtime"] = {k: v for k, v in params["runtime"].items() if k != "threads"}
    return params


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested param dicts, as `key: old -> new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if canonical_json(old) != canonical_json(new):
        return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return []


def changed_inputs(old: Any, new: str | dict[str, str]) -> str:
    """Which named inputs differ between a checkpoint's data id and the run's: "f.pt changed", "the shards changed"."""
    if isinstance(old, dict) and isinstance(new, dict):
        names = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        return ", ".join(f"{name} changed" for name in names)
    return "the shards changed"


@dataclass(frozen=True)
class Resume:
    """The outcome of looking for a checkpoint: the dict to resume from (or None) and what to tell the user."""

    checkpoint: dict[str, Any] | None
    message: str


def find_resume(path: Path, key: RunKey) -> Resume:
    """Resume from `path` only when its params, code version and data all match `key`.

    Raises:
        pipeline.core.checkpoint.CheckpointError: when the file exists but is corrupt or foreign.
    """
    path = Path(path)
    if not path.is_file():
        return Resume(None, f"no checkpoint at {path}; training from step 0")
    payload = load_checkpoint(path)
    saved = payload.get("run", {})
    if saved.get("key") == key.value:
        return Resume(payload, f"resuming from step {payload['step']} of {path}")
    reasons = []
    changed = _differences(saved.get("params", {}), key.params)
    if changed:
        shown = "; ".join(changed[:5]) + ("; ..." if len(changed) > 5 else "")
        reasons.append(f"other params ({shown})")
    if saved.get("code") != key.code:
        reasons.append(f"other code (version {saved.get('code')} -> {key.code})")
    if saved.get("data") != key.data:
        reasons.append(f"other input data ({changed_inputs(saved.get('data'), key.data)})")
    why = ", ".join(reasons) or "another run key"
    return Resume(None, f"{path} was made with {why}; starting fresh from step 0 (it will be overwritten)")
