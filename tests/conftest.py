"""Shared fixtures: the sandbox served on 127.0.0.1 for the length of a test, and paths to the shared data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.core.params import FaultParams, SandboxParams
from pipeline.sandbox.server import SandboxServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def sandbox_server() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers with given params; every one is stopped when the test ends."""
    started: list[SandboxServer] = []

    def start(faults: FaultParams | None = None, **sandbox: object) -> SandboxServer:
        cfg = SandboxParams(faults=faults or FaultParams(), **sandbox)  # type: ignore[arg-type]
        server = SandboxServer(cfg).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def faces_dev() -> Path:
    path = SHARED_DATA / "faces-dev"
    if not path.is_dir():
        pytest.skip(f"shared photo set not found at {path}")
    return path


def make_tiny_faces(root: Path, classes: int = 4, per_class: tuple[int, int, int] = (24, 4, 4), side: int = 40) -> Path:
    """Packed `faces` shards of `classes` made-up identities a small net tells apart: a coloured disc whose colour
    and place name the identity, on noise. per_class = (train, val, test) images of each. Returns `root`."""
    import numpy as np
    import pandas as pd

    from pipeline.core.manifest import write_manifest
    from pipeline.dataset.shards import write_dataset

    rng = np.random.default_rng(0)
    rows, images = [], []
    yy, xx = np.mgrid[0:side, 0:side]
    for label in range(classes):
        colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 40) % 256])
        cx, cy = side * (0.3 + 0.4 * (label % 2)), side * (0.3 + 0.4 * ((label // 2) % 2))
        for split, count in zip(("train", "val", "test"), per_class, strict=True):
            for _ in range(count):
                image = rng.integers(0, 120, (side, side, 3))
                disc = (xx - cx - rng.normal(0, 2)) ** 2 + (yy - cy - rng.normal(0, 2)) ** 2 < (side * 0.22) ** 2
                image[disc] = np.clip(colour + rng.normal(0, 20, 3), 0, 255)
                images.append(image.astype(np.uint8))
                rows.append({"split": split, "label": label, "identity": f"person_{label}"})
    frame = pd.DataFrame(rows)
    index = write_dataset(frame, lambda i: (images[i], {}), root, shard_size=16)
    write_manifest(index.to_dict("records"), root / "index.parquet", list(index.columns), {})
    return root


@pytest.fixture
def tiny_faces(tmp_path: Path) -> Path:
    """A pack output folder (`<it>/faces`) of tiny, learnable face shards."""
    make_tiny_faces(tmp_path / "shards" / "faces")
    return tmp_path / "shards"
