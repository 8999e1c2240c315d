"""The one file primitive of every model and checkpoint: an atomic dict of tensors, loaded weights-only."""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.core.storage import atomic_write_bytes

FORMAT = "img2caricature/checkpoint-v1"
START_FRESH = "delete it (or move it away) and re-run to train from scratch"


class CheckpointError(RuntimeError):
    """A checkpoint or model file is corrupt or was not written by this project; the message names it and the fix."""


def save_checkpoint(path: Path, payload: dict[str, Any], fmt: str = FORMAT) -> None:
    """Write a checkpoint dict (tagged with `fmt`) atomically: serialised in memory, then a temp file in the same
    folder, fsync and a rename, so a full disk or a killed run never leaves half a file under the name.

    Raises:
        pipeline.core.storage.DiskFullError, OutputError: naming the file, when it cannot be written.
    """
    buffer = io.BytesIO()
    torch.save({"format": fmt, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _reason(exc: BaseException) -> str:
    """Why the load failed, in this project's words: torch's own advice for a refused file is to load it unsafely."""
    said = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "Weights only load failed" in said:
        return "it holds objects other than tensors and plain values, which a safe load refuses"
    first = said.splitlines()[0] if said else type(exc).__name__
    return first.split(". ")[0].strip(" .:;")[:160] or type(exc).__name__


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
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint that can be loaded safely ({_reason(exc)}); {START_FRESH}. "
            "It is never loaded as a pickle: that could run code from the file"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an img2caricature checkpoint (format {found!r}, expected {expected_format!r}); "
            f"{START_FRESH}"
        )
    return payload
