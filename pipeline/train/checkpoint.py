"""Checkpoints: atomic dicts with the run's key (params, code, data), loaded weights-only, resumed only on a match."""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.core.reuse import canonical_json, result_key

FORMAT = "img2caricature/checkpoint-v1"
START_FRESH = "delete it (or move it away) and re-run to train from scratch"
CHECKPOINT_FILE = "last.pt"  # the resume state in a stage's checkpoint_dir


class CheckpointError(RuntimeError):
    """A checkpoint file is corrupt or was not written by this project; the message names it and the fix."""


@dataclass(frozen=True)
class RunKey:
    """What a training result depends on: the params that shape it, the code version and the input data.

    Attributes:
        params: the resolved params that shape the result (paths and log intervals left out).
        code: `pipeline.core.reuse.code_version` of the modules that train.
        data: an id of the input data (the shards' checksums).
    """

    params: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    data: str = ""

    @property
    def value(self) -> str:
        return result_key(self.data, self.params, self.code)

    def record(self) -> dict[str, Any]:
        return {"params": self.params, "code": self.code, "data": self.data, "key": self.value}


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


def save_checkpoint(path: Path, payload: dict[str, Any], fmt: str = FORMAT) -> None:
    """Write a checkpoint dict (tagged with `fmt`) atomically: a temp file in the same folder, fsync, a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            torch.save({"format": fmt, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, expected_format: str = FORMAT, missing: str = "") -> dict[str, Any]:
    """Load a checkpoint dict with `torch.load(weights_only=True)` onto the CPU.

    Args:
        missing: for a model file a user passes to a command: what to do when there is none
            (`FileNotFoundError` "<path> not found; <missing>").

    Raises:
        FileNotFoundError: when `missing` is given and there is no file.
        CheckpointError: when the file is unreadable, truncated, holds objects a weights-only load refuses, or is
            not a dict of `expected_format`; the message names the file and what to do.
    """
    if missing and not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; {missing}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint that can be loaded safely ({reason[:200]}); {START_FRESH}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an img2caricature checkpoint (format {found!r}, expected {expected_format!r}); "
            f"{START_FRESH}"
        )
    return payload


@dataclass(frozen=True)
class Resume:
    """The outcome of looking for a checkpoint: the dict to resume from (or None) and what to tell the user."""

    checkpoint: dict[str, Any] | None
    message: str


def find_resume(path: Path, key: RunKey) -> Resume:
    """Resume from `path` only when its params, code version and data all match `key`.

    Raises:
        CheckpointError: when the file exists but is corrupt or foreign.
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
        reasons.append("other input data (the shards changed)")
    why = ", ".join(reasons) or "another run key"
    return Resume(None, f"{path} was made with {why}; starting fresh from step 0 (it will be overwritten)")
