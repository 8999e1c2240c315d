"""The shard loader: shapes, seeded epochs, workers, checksum errors, DDP sharding over gloo, on-device transforms."""

from __future__ import annotations

import itertools
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.core.manifest import write_manifest
from pipeline.dataset.loader import (
    Augment,
    ShardDataset,
    ShardError,
    ShardStream,
    augment_batch,
    make_loader,
    pick_device,
    to_model_input,
)
from pipeline.dataset.shards import write_dataset

SIDE = 24
TRAIN = [i for i in range(23) if i % 5 != 4]  # the sample ids make_shards puts in `train`


def _image(sample: int) -> np.ndarray:
    """An image that names its sample: channel 0 = id, channel 1 = a gradient, channel 2 = 7."""
    image = np.full((SIDE, SIDE, 3), 7, np.uint8)
    image[..., 0] = sample
    image[..., 1] = np.arange(SIDE, dtype=np.uint8)[None, :] * 10
    return image


def make_shards(root: Path, n: int = 23, shard_size: int = 5) -> Path:
    """A packed dataset of n samples, all in `train` except 4 in `test`, whose pixels encode the sample id."""
    rows = pd.DataFrame({"sample": range(n), "split": ["test" if i % 5 == 4 else "train" for i in range(n)]})
    rows["label"] = rows["sample"] % 3
    index = write_dataset(rows, lambda i: (_image(i), {}), root, shard_size)
    write_manifest(index.to_dict("records"), root / "index.parquet", list(index.columns), {})
    return root


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    return make_shards(tmp_path / "faces")


def _epoch(stream: ShardStream, workers: int = 0) -> list[list[int]]:
    """The sample ids of each batch, checking that every image is the one its index row names."""
    sample_of = stream.data.index["sample"]
    batches = []
    for batch in make_loader(stream, num_workers=workers):
        samples = sample_of.loc[batch["index"].numpy()].tolist()
        assert batch["image"][:, 0, 0, 0].tolist() == samples
        assert batch["label"].tolist() == [s % 3 for s in samples]
        batches.append(samples)
    return batches


def test_batches_have_the_right_shapes_dtypes_and_labels(shards: Path) -> None:
    data = ShardDataset(shards, "train")
    assert len(data) == 19 and data.image_shape == (SIDE, SIDE, 3)
    batch = next(iter(ShardStream(data, batch_size=4, seed=0)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, SIDE, SIDE, 3)
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    item = data[0]
    assert item["image"].shape == (SIDE, SIDE, 3) and int(item["index"]) == 0 and int(item["label"]) == 0
    for size in (64, 128, 152):
        x = to_model_input(batch["image"], size)
        assert x.shape == (4, 3, size, size) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
    empty = ShardDataset(shards, "val")  # make_shards puts nothing in val
    assert len(empty) == 0 and list(make_loader(ShardStream(empty, batch_size=4))) == []
    with pytest.raises(ValueError, match="split='training'"):
        ShardDataset(shards, "training")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_epochs_are_seeded_cover_the_split_and_differ(shards: Path) -> None:
    stream = ShardStream(ShardDataset(shards, "train"), batch_size=4, seed=1, window=2)
    first = _epoch(stream)
    assert len(first) == len(stream) == 5
    assert sorted(itertools.chain(*first)) == TRAIN
    assert _epoch(stream) == first
    stream.set_epoch(1)
    assert _epoch(stream) != first
    one_map = ShardStream(ShardDataset(shards, "train", max_open=1), batch_size=4, seed=1, window=2)
    one_map.set_epoch(1)
    assert _epoch(one_map) == _epoch(stream)  # evicting memory maps changes nothing but the open files
    ordered = _epoch(ShardStream(ShardDataset(shards, "train"), batch_size=4, shuffle=False))
    assert list(itertools.chain(*ordered)) == TRAIN  # packed in row order


def test_two_workers_give_the_same_batches_as_none(shards: Path) -> None:
    stream = ShardStream(ShardDataset(shards, "train"), batch_size=3, seed=2)
    stream.set_epoch(3)
    assert _epoch(stream, workers=2) == _epoch(stream, workers=0)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_shard_is_named_with_the_fix(shards: Path, damage: str) -> None:
    shard = shards / "train-00001.npy"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    else:
        data = data[:-100]
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-00001\.npy.*dvc repro pack") as error:
        ShardDataset(shards, "train")
    assert ("corrupt" if damage == "flip" else "truncated") in str(error.value)
    ShardDataset(shards, "test")  # the other split's shards are fine


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_index_is_named_with_the_fix(shards: Path, damage: str) -> None:
    index = shards / "index.parquet"
    data = bytearray(index.read_bytes())
    if damage == "flip":  # the last bytes of the `offset` column's pages: the numbers that locate every image
        parquet = pq.ParquetFile(index)
        column = parquet.metadata.row_group(0).column(parquet.schema_arrow.get_field_index("offset"))
        end = column.data_page_offset + column.total_compressed_size
        data[end - 4 : end] = bytes(b ^ 0xFF for b in data[end - 4 : end])
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a parquet file")
    index.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"index\.parquet is unreadable .*re-run `dvc repro pack`"):
        ShardDataset(shards, "train")


def _ddp_rank(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        seen = {}
        for equalise in ("drop", "pad"):
            # rank and world size come from the process group, as in a torchrun job
            stream = ShardStream(ShardDataset(root, "train"), batch_size=4, seed=5, equalise=equalise)
            stream.set_epoch(2)
            batches = list(make_loader(stream, num_workers=0))
            everyone: list[object] = [None] * world
            # a real collective per batch: unequal batch counts would hang or fail here
            for _ in batches:
                dist.all_reduce(torch.ones(1))
            dist.all_gather_object(everyone, [i for b in batches for i in b["index"].tolist()])
            seen[equalise] = everyone
        if rank == 0:
            Path(out).write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_ranks_read_disjoint_equal_shares(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    mp.spawn(_ddp_rank, args=(2, _free_port(), str(shards), str(out)), nprocs=2, join=True)
    seen = json.loads(out.read_text())
    train = set(ShardDataset(shards, "train").index.index)  # 19 rows: odd, so ranks need equalising
    first, second = seen["drop"]
    assert len(first) == len(second) == 9
    assert not set(first) & set(second) and len(set(first) | set(second)) == 18 and set(first) | set(second) <= train
    first, second = seen["pad"]
    assert len(first) == len(second) == 10
    assert set(first) | set(second) == train and len(set(first) & set(second)) == 1


def test_augment_is_seeded_and_flip_mirrors() -> None:
    x = torch.rand(6, 3, 16, 16)
    mirror = augment_batch(x, Augment(flip=1.0, crop=0, brightness=0, contrast=0, saturation=0))
    assert torch.allclose(mirror, x.flip(3))
    cropped = augment_batch(x, Augment(flip=1.0, crop=1e-6, brightness=0, contrast=0, saturation=0))
    assert torch.allclose(cropped, x.flip(3), atol=1e-4)  # the crop path resamples exactly at scale 1
    cfg = Augment()
    a = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0))
    b = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.allclose(a, x) and a.min() >= 0 and a.max() <= 1
    images = torch.randint(0, 256, (2, 152, 152, 3), dtype=torch.uint8)
    y = to_model_input(images, 64, cfg, torch.Generator().manual_seed(1))
    assert y.shape == (2, 3, 64, 64) and not torch.isnan(y).any()
