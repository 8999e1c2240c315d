"""Where and how training runs: device, threads, seeds, bf16 autocast, channels_last, torch.compile and DDP."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.params import RuntimeParams
from pipeline.dataset.loader import pick_device


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for one (run seed, step, rank): a resumed run draws exactly what an uninterrupted one did."""
    digest = hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Runtime:
    """One training process: its device and precision, and its place in a torchrun job (rank 0 of 1 alone).

    Attributes:
        device: where the model and batches live.
        rank / world_size / local_rank: the process's place in the job.
        bf16: autocast matmuls and convs to bfloat16.
        channels_last: keep the model and its inputs in NHWC memory order.
        compile: torch.compile the model in `prepare`.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """bf16 autocast on the device when asked for, else a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a (pinned, on CUDA) batch tensor to the device without blocking the host."""
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """A 4-d input in the model's memory order."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def prepare(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        """Move `model` to the device (in place) and return what the forward pass should call.

        The returned module may be compiled and/or DDP-wrapped; keep `model` itself for state_dict and optimizers,
        since it shares every parameter with the wrapper.
        """
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        net: nn.Module = model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
        if self.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        return net

    def seed_step(self, seed: int, step: int) -> torch.Generator:
        """Seed every device's global RNG (dropout) for this step; returns a CPU generator for augmentation."""
        value = step_seed(seed, step, self.rank)
        torch.manual_seed(value)
        return torch.Generator().manual_seed(value)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over ranks (a copy; the tensor itself when alone)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone().to(self._comm_device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(tensor.device)

    def mean_over_ranks(self, values: Mapping[str, float]) -> dict[str, float]:
        """Average scalar metrics over ranks, so every rank logs and reports the same numbers."""
        names = sorted(values)
        if not self.distributed or not names:
            return {name: float(values[name]) for name in names}
        stacked = torch.tensor([float(values[name]) for name in names], dtype=torch.float64)
        summed = self.all_sum(stacked) / self.world_size
        return dict(zip(names, summed.tolist(), strict=True))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Leave the process group (a no-op when alone)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def torchrun_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) from torchrun's environment; (0, 1, 0, 1) without it."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, 1
    return int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", str(world)))


def start_runtime(params: RuntimeParams, seed: int) -> Runtime:
    """Pick the device, set threads and seeds, and join the torchrun job when launched by torchrun.

    Under torchrun each rank takes `cuda:LOCAL_RANK` (NCCL) on GPUs and the CPU (gloo) otherwise; the loader
    then gives every rank its own share of each epoch.

    Raises:
        ValueError: when params ask for CUDA on a machine without it.
    """
    rank, world, local_rank, local_world = torchrun_env()
    wanted = None if params.device == "auto" else params.device
    if wanted and wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"runtime.device={params.device!r} but this machine has no CUDA; use auto or cpu")
    device = pick_device(wanted)
    if device.type == "cuda" and world > 1 and wanted in (None, "cuda"):
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Ranks on one machine share its cores; oversubscribed threads only contend.
    torch.set_num_threads(params.threads or max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(step_seed(seed, -1, rank))
    bf16 = params.precision == "bf16" or (params.precision == "auto" and device.type == "cuda")
    return Runtime(device, rank, world, local_rank, bf16, params.channels_last, params.compile)


@contextlib.contextmanager
def runtime(params: RuntimeParams, seed: int) -> Iterator[Runtime]:
    """`start_runtime` as a context that leaves the process group however the body ends."""
    rt = start_runtime(params, seed)
    try:
        yield rt
    finally:
        rt.close()
