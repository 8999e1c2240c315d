"""Read packed shards: checksum-verified memory maps, seeded DDP/worker-aware batches, on-device resize and augment."""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from pipeline.dataset.splits import ALL_SPLITS

REPACK = "re-run `dvc repro pack` to rebuild it"
# Per process: shard path -> (size, mtime_ns, inode) of the bytes whose sha256 matched the index. Forked
# DataLoader workers inherit it, and a pickled ShardDataset carries its own entries to spawned workers.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


class ShardError(RuntimeError):
    """A shard or index is missing, truncated or corrupt; the message names the file."""


def all_images(splits: list[ShardDataset]) -> tuple[torch.Tensor, pd.DataFrame]:
    """Every image of the splits, uint8 (N, H, W, 3), and their index rows."""
    images = torch.cat([s.gather(np.arange(len(s)))["image"] for s in splits if len(s)])
    rows = pd.concat([s.index for s in splits if len(s)])
    return images, rows


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` when given, else CUDA when available, else CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def forget_verified() -> None:
    """Make this process hash every shard again on its next open (benchmarks of a cold start, tests)."""
    _VERIFIED.clear()


def _stat_key(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def open_shard(path: Path, sha256: str, nbytes: int) -> np.ndarray:
    """Memory-map one shard as a read-only (N, H, W, 3) uint8 array, hashing its bytes the first time.

    Raises:
        ShardError: when the file is missing, has the wrong size, the wrong sha256 or is not a uint8 image stack.
    """
    if not path.is_file():
        raise ShardError(f"shard {path} is missing; {REPACK}")
    key = _stat_key(path)
    if key[0] != nbytes:
        raise ShardError(f"shard {path} is truncated or overwritten: {key[0]} bytes, index says {nbytes}; {REPACK}")
    if _VERIFIED.get(str(path)) != key:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise ShardError(f"shard {path} is corrupt: its sha256 differs from the index; {REPACK}")
        _VERIFIED[str(path)] = key
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ShardError(f"shard {path} is not a readable .npy file ({exc}); {REPACK}") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise ShardError(f"shard {path} holds {array.dtype} {array.shape}, not uint8 (N, H, W, 3); {REPACK}")
    return array


class ShardDataset(Dataset):
    """One split of a packed dataset (`data/shards/faces`, ...): item i is a dict of image, label and index row.

    Every shard of the split is opened (and its checksum verified) here, so a bad shard fails before training.

    Attributes:
        index: the split's rows of index.parquet; `index.index` holds the row numbers that batches report.
    """

    def __init__(self, root: str | Path, split: str | None = None, max_open: int = 128) -> None:
        if split not in (None, *ALL_SPLITS):
            raise ValueError(f"split={split!r}: use one of {ALL_SPLITS} or None for all")
        self.root = Path(root)
        path = self.root / "index.parquet"
        if not path.is_file():
            raise ShardError(f"{path} not found; run `dvc repro pack`")
        try:  # page checksums catch corruption inside a column; pyarrow reports damage as OSError or ArrowInvalid
            index = pq.read_table(path, page_checksum_verification=True).to_pandas()
        except (OSError, ValueError) as exc:
            raise ShardError(f"{path} is unreadable ({exc}); re-run `dvc repro pack` to rebuild the shards") from None
        self.index = index if split is None else index[index["split"] == split]
        shards = self.index.drop_duplicates("shard")
        self.shard_files = list(shards["shard"])
        self._shard_meta = list(zip(shards["shard_sha256"], shards["shard_bytes"], strict=True))
        self.shard_of = pd.Categorical(self.index["shard"], categories=self.shard_files).codes.astype(np.int64)
        self.offsets = self.index["offset"].to_numpy(np.int64)
        self.labels = self.index["label"].fillna(-1).to_numpy(np.int64)
        self.rows = self.index.index.to_numpy(np.int64)
        # Each memory map holds a file descriptor (Python < 3.13 dups it), so at most max_open stay mapped.
        self.max_open = max(1, max_open)
        self._arrays: OrderedDict[int, np.ndarray] = OrderedDict()
        last = pd.Series(self.offsets).groupby(self.shard_of).max()
        shapes = set()
        for shard in range(len(self.shard_files)):
            array = self._array(shard)
            if last[shard] >= len(array):
                raise ShardError(
                    f"{self.root / self.shard_files[shard]} has {len(array)} samples but the index "
                    f"points at offset {last[shard]}; {REPACK}"
                )
            shapes.add(tuple(array.shape[1:]))
        if len(shapes) > 1:
            raise ShardError(f"{self.root} mixes image shapes {sorted(shapes)} in one split; {REPACK}")
        self.image_shape = shapes.pop() if shapes else (0, 0, 3)

    def _array(self, shard: int) -> np.ndarray:
        if shard in self._arrays:
            self._arrays.move_to_end(shard)
        else:
            self._arrays[shard] = open_shard(self.root / self.shard_files[shard], *self._shard_meta[shard])
            if len(self._arrays) > self.max_open:
                self._arrays.popitem(last=False)  # batches are copies, so nothing else holds the map
        return self._arrays[shard]

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps do not pickle; spawned workers re-map, trusting this process's checks of unchanged files.
        state = dict(self.__dict__, _arrays=OrderedDict())
        paths = [str(self.root / f) for f in self.shard_files]
        state["_verified"] = {p: _VERIFIED[p] for p in paths if p in _VERIFIED}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for path, key in state.pop("_verified").items():
            _VERIFIED.setdefault(path, key)
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.gather(np.array([i])).items()}

    def gather(self, positions: np.ndarray, shared: bool = False) -> dict[str, torch.Tensor]:
        """A batch of the given positions, in ascending position order (= shard, offset order).

        Each shard's run is copied straight from the memory map into the batch tensor: the only copy.

        Args:
            positions: positions in this split (0..len-1).
            shared: allocate the batch in shared memory, so a DataLoader worker hands it over without a copy.

        Returns:
            image (B, H, W, 3) uint8, label (B,) int64 (-1 = none), index (B,) int64 row of index.parquet.
        """
        positions = np.sort(positions)
        shape = (len(positions), *self.image_shape)
        if shared:  # the same trick as torch's default_collate inside a worker
            storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(math.prod(shape))
            images = torch.empty(0, dtype=torch.uint8).new(storage).resize_(shape)
        else:
            images = torch.empty(shape, dtype=torch.uint8)
        out = images.numpy()
        shards = self.shard_of[positions]
        cuts = np.flatnonzero(np.diff(shards)) + 1
        runs = zip([0, *cuts], [*cuts, len(positions)], strict=True) if len(positions) else []
        for start, stop in runs:
            array, offsets = self._array(int(shards[start])), self.offsets[positions[start:stop]]
            if offsets[-1] - offsets[0] == stop - start - 1:  # a contiguous run: one slice copy
                out[start:stop] = array[offsets[0] : offsets[-1] + 1]
            else:
                # mode="clip" skips the bounds-check buffer numpy adds for "raise" (4x faster); the constructor
                # checked every offset against its shard's length
                np.take(array, offsets, axis=0, out=out[start:stop], mode="clip")
        labels, rows = torch.from_numpy(self.labels[positions]), torch.from_numpy(self.rows[positions])
        return {"image": images, "label": labels, "index": rows}


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Whole batches of one epoch, disjoint across DDP ranks and DataLoader workers; use with `make_loader`.

    Order per epoch (seed + epoch): shards are permuted, then samples are permuted within windows of `window`
    consecutive shards (window >= number of shards = a full shuffle). The epoch order is cut into `world_size`
    equal contiguous parts, one per rank: `equalise="drop"` drops the last (len % world_size) samples of the
    epoch order (different ones each epoch), `"pad"` repeats samples from its start (evaluation: deduplicate
    on the batch's `index`). Equal counts give every rank the same number of batches, so DDP never hangs.
    """

    def __init__(
        self,
        data: ShardDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        equalise: str = "drop",
        window: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if equalise not in ("drop", "pad") or batch_size < 1 or window < 1:
            raise ValueError(f"equalise={equalise!r} (drop|pad), batch_size={batch_size}, window={window} (>= 1)")
        found_rank, found_world = _distributed()
        self.rank = found_rank if rank is None else rank
        self.world_size = found_world if world_size is None else world_size
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.drop_last, self.equalise, self.window, self.epoch = drop_last, equalise, window, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's order; call before iterating (workers get a fresh copy per epoch)."""
        self.epoch = epoch

    def per_rank(self) -> int:
        """Samples each rank reads per epoch."""
        n, world = len(self.data), self.world_size
        return n // world if self.equalise == "drop" else math.ceil(n / world)

    def epoch_order(self) -> np.ndarray:
        """This rank's positions for the current epoch."""
        n = len(self.data)
        order = np.arange(n)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            by_shard = np.split(order, np.flatnonzero(np.diff(self.data.shard_of)) + 1) if n else []
            shuffled = [by_shard[i] for i in rng.permutation(len(by_shard))]
            windows = [np.concatenate(shuffled[i : i + self.window]) for i in range(0, len(shuffled), self.window)]
            order = np.concatenate([rng.permutation(w) for w in windows]) if windows else order
        size = self.per_rank()
        if size * self.world_size > n:
            order = np.resize(order, size * self.world_size)  # np.resize repeats from the start
        return order[self.rank * size : (self.rank + 1) * size]

    def __len__(self) -> int:
        size = self.per_rank()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self.epoch_order()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)][: len(self)]
        worker = get_worker_info()
        # DataLoader takes batches from workers round-robin, so the epoch's batch order is the same for any count.
        mine = batches if worker is None else batches[worker.id :: worker.num_workers]
        for batch in mine:
            yield self.data.gather(batch, shared=worker is not None)


def make_loader(stream: ShardStream, num_workers: int = 0, device: torch.device | None = None) -> DataLoader:
    """A DataLoader over whole batches; workers are re-created per epoch so that `set_epoch` reaches them."""
    pin = device is not None and device.type == "cuda"
    workers = min(num_workers, os.cpu_count() or 1)
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin, persistent_workers=False)


@dataclass(frozen=True)
class Augment:
    """Light training augmentation, applied per sample on the batch's device.

    Attributes:
        flip: probability of a horizontal flip.
        crop: largest share of the side a random crop removes (0.1 = crops of 90-100 %), resized back.
        brightness / contrast / saturation: factors drawn uniformly from 1 +- this.
        rotate: largest in-plane rotation, degrees either way.
        grey: probability of turning the image grey (real face sets mix in black-and-white photos).
    """

    flip: float = 0.5
    crop: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    rotate: float = 0.0
    grey: float = 0.0


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # (B, 1, S, S)


def augment_batch(x: torch.Tensor, cfg: Augment, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop, rotation, flip, colour jitter and greying of a float (B, 3, S, S) batch in [0, 1]."""
    batch = x.shape[0]
    # Drawn on the CPU: the same seed gives the same augmentation on every device.
    u = torch.rand((batch, 9), generator=generator).to(x.device, x.dtype)
    flip = torch.where(u[:, 0] < cfg.flip, -1.0, 1.0).to(x)
    if cfg.crop > 0 or cfg.rotate > 0:
        scale = 1 - cfg.crop * u[:, 1]
        angle = (2 * u[:, 7] - 1) * math.radians(cfg.rotate)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.zeros((batch, 2, 3), device=x.device, dtype=x.dtype)
        # output -> input coordinates: rotate and scale, after mirroring the output's x when flipped
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos * flip, -sin, sin * flip, cos
        theta[:, 0, 2], theta[:, 1, 2] = (2 * u[:, 2] - 1) * (1 - scale), (2 * u[:, 3] - 1) * (1 - scale)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, S, S, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:
        x = torch.where((flip < 0).view(-1, 1, 1, 1), x.flip(3), x)
    factors = 1 + (2 * u[:, 4:7] - 1) * torch.tensor([cfg.brightness, cfg.contrast, cfg.saturation]).to(x)
    x = x * factors[:, 0].view(-1, 1, 1, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors[:, 1].view(-1, 1, 1, 1) + mean
    grey = _grey(x)
    x = (x - grey) * factors[:, 2].view(-1, 1, 1, 1) + grey
    if cfg.grey > 0:
        x = torch.where((u[:, 8] < cfg.grey).view(-1, 1, 1, 1), _grey(x).expand_as(x), x)
    return x.clamp_(0, 1)


def to_model_input(
    images: torch.Tensor, size: int, augment: Augment | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> float (B, 3, size, size) in [-1, 1], resized and optionally augmented.

    Move the uint8 batch to the training device first: a quarter of the bytes of float, and the work runs there.
    """
    x = images.permute(0, 3, 1, 2)  # (B, 3, H, W), a channels-last view: no copy
    resize = tuple(x.shape[2:]) != (size, size)
    if resize and x.device.type == "cpu":
        # PyTorch's CPU kernel for uint8 channels-last antialiased bilinear is ~6x faster than the float one.
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255)  # (B, 3, ., .) NCHW
    if resize and x.shape[2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if augment is not None:
        x = augment_batch(x, augment, generator)
    return x.mul_(2).sub_(1)


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """A model's image output (B, 3, S, S) in [-1, 1] -> uint8 (B, S, S, 3) on the CPU: `to_model_input` undone."""
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
