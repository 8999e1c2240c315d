"""The one file primitive of every model and checkpoint: an atomic dict of tensors, loaded weights-only."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "img2caricature/checkpoint-v1"
START_FRESH = "delete it (or move it away) and re-run to train from scratch"


class CheckpointError(RuntimeError):
    """A checkpoint or model file is corrupt or was not written by this project; the message names it and the fix."""


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
