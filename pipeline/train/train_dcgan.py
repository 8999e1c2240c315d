"""`train_dcgan`: the DCGAN of aligned faces at 64 x 64, its fixed-noise grids and GIF, and its Fréchet distances."""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.params import DcganParams, Params, TrainParams, resolved
from pipeline.core.reuse import code_version
from pipeline.core.storage import atomic_write_bytes
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, ShardStream, to_model_input
from pipeline.evaluate.frechet import (
    Embed,
    embed_all,
    frechet_distance,
    load_inception,
    mean_pairwise_distance,
    split_halves,
)
from pipeline.models.dcgan import IMAGE_SIZE, Discriminator, Generator, to_uint8_images
from pipeline.models.face_encoder import load_f
from pipeline.train.checkpoint import CHECKPOINT_FILE, RunKey, save_checkpoint
from pipeline.train.loop import Trainer, TrainStep
from pipeline.train.pretrain_f import FaceData, read_faces
from pipeline.train.runtime import Runtime, runtime

DCGAN_FORMAT = "img2caricature/dcgan-v1"
FRAMES = "samples"  # plots/images/samples/step_NNNNNN.png: the fixed-noise grid at every logged step
FINAL_GRID = "samples_final.png"
GIF = "training.gif"
GRID_COLS = 8
GIF_ROWS = 2  # the GIF shows the first two rows of each grid: the report inlines it
# Keys of the `dcgan` section that never change the trained weights: how the result is judged and where files go.
NOT_SHAPING = ("real_splits", "eval_flip", "inception", "model", "metrics", "run_log", "live_dir", "checkpoint_dir")


class DcganError(ValueError):
    """The face shards cannot train or judge the DCGAN as asked; the message says what to do."""


@dataclass(frozen=True)
class DcganResult:
    """What a train_dcgan run produced: the flat metrics and what the run itself did (a run log)."""

    metrics: dict[str, Any]
    run: dict[str, Any]


def run_key(train: TrainParams, section: DcganParams, data_id: str) -> RunKey:
    """What the weights, curves and grids depend on: both sections' shaping params, the code and the data."""
    loop = {k: v for k, v in resolved(train).items() if k != "checkpoint_every"}
    loop["runtime"] = {k: v for k, v in loop["runtime"].items() if k != "threads"}
    shaping = {k: v for k, v in resolved(section).items() if k not in NOT_SHAPING}
    return RunKey({"train": loop, "dcgan": shaping}, code_version("pipeline.train.train_dcgan"), data_id)


def fixed_noise(count: int, nz: int, seed: int) -> torch.Tensor:
    """The same noise vectors in every grid of a run (and of every run with this seed)."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def sample(gen: Generator, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 faces (N, 64, 64, 3) of `noise`, generated in batches as in training (BatchNorm on batch statistics).

    A copy of G does the work, so sampling never moves the running statistics that the checkpoint holds.
    """
    sampler = copy.deepcopy(gen).train()
    device = next(gen.parameters()).device
    with torch.no_grad():
        return torch.cat([to_uint8_images(sampler(z.to(device))) for z in noise.split(batch_size)])


def sample_grid(gen: Generator, noise: torch.Tensor, batch_size: int) -> np.ndarray:
    """The fixed-noise samples tiled 8 per row."""
    return image_grid(list(sample(gen, noise, batch_size).numpy()), cols=GRID_COLS)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float) -> torch.Tensor:
    """D's cross-entropy: real faces towards `real_label`, generated ones towards 0.

    With `real_label` < 1 (one-sided label smoothing) D gains nothing from calling a real face surer than
    `real_label`, so it cannot run its logits off to infinity and starve G of gradient: at the CPU default's 600
    steps, D(G(z)) otherwise fell to 0.002 by step 100 for some seeds and G collapsed to one face.
    """
    bce = F.binary_cross_entropy_with_logits
    return bce(real_logits, torch.full_like(real_logits, real_label)) + bce(fake_logits, torch.zeros_like(fake_logits))


def gan_step(
    rt: Runtime,
    gen_net: nn.Module,
    disc_net: nn.Module,
    trainer: Trainer,
    section: DcganParams,
    augment: Augment,
) -> TrainStep:
    """One DCGAN iteration: a D step on real and generated faces, then a G step, each with its own Adam."""
    bce = F.binary_cross_entropy_with_logits
    nz = section.nz

    def train_step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        real = rt.memory_format(to_model_input(rt.to_device(batch["image"]), IMAGE_SIZE, augment, generator))
        size = real.shape[0]
        noise = torch.randn(size, nz, generator=generator).to(rt.device)  # drawn on the CPU: the same on any device
        # ---- D step: maximise log D(x) + log(1 - D(G(z))); G's faces are detached
        with rt.autocast():
            real_logits = disc_net(real).float()
            fake = gen_net(noise)
            fake_logits = disc_net(fake.detach()).float()
        loss_d = discriminator_loss(real_logits, fake_logits, section.real_label)
        trainer.backward(loss_d, "D")
        # ---- G step: maximise log D(G(z)) against the updated D (the non-saturating loss)
        with rt.autocast():
            fooled_logits = disc_net(fake).float()
        loss_g = bce(fooled_logits, torch.ones_like(fooled_logits))
        trainer.backward(loss_g, "G")
        return {
            "train/loss_D": loss_d.detach(),
            "train/loss_G": loss_g.detach(),
            "train/D_x": torch.sigmoid(real_logits.detach()).mean(),
            "train/D_G_z_before_D_step": torch.sigmoid(fake_logits.detach()).mean(),
            "train/D_G_z_at_G_step": torch.sigmoid(fooled_logits.detach()).mean(),
        }

    return train_step


def with_grids(step_fn: TrainStep, trainer: Trainer, grid: Callable[[int], None]) -> TrainStep:
    """`step_fn`, followed by the fixed-noise grid after every step the trainer logs."""
    loop = trainer.loop

    def train_step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        metrics = step_fn(batch, generator)
        done = trainer.step + 1  # the trainer counts this step after the call returns
        if done % loop.log_every == 0 or done == loop.steps:
            grid(done)
        return metrics

    return train_step


def write_gif(frames_dir: Path, out: Path, last_step: int) -> int:
    """An animated GIF (Pillow) of the grids `step_*.png` up to `last_step` (their first rows), captioned with the step.

    Returns:
        the number of frames.
    """
    from PIL import Image

    files = sorted(p for p in frames_dir.glob("step_*.png") if int(p.stem.split("_")[1]) <= last_step)
    frames = []
    for path in files:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        rgb = rgb[: 2 + GIF_ROWS * (rgb.shape[1] - 2) // GRID_COLS]  # square tiles: a row is (width - pad) / cols
        band = np.full((18, rgb.shape[1], 3), 255, np.uint8)
        cv2.putText(band, f"step {int(path.stem.split('_')[1])}", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        frames.append(Image.fromarray(np.vstack([band, rgb])).quantize(colors=255, method=Image.Quantize.MEDIANCUT))
    if not frames:
        return 0
    durations = [250] * (len(frames) - 1) + [2000]  # ms; hold the last grid
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    atomic_write_bytes(out, buffer.getvalue())
    return len(frames)


# ---- evaluation: Fréchet distances in f's space (and Inception's), the floor, diversity ------------------------------


def real_views(data_root: Path, splits: list[str], flip: bool) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The real faces of `splits` at 64 x 64 as uint8 (N, 64, 64, 3), mirrored too with `flip`, with each view's
    photo id and identity label (strata of the floor's halves)."""
    images, labels = [], []
    for split in splits:
        data = ShardDataset(data_root, split)
        if len(data):
            batch = data.gather(np.arange(len(data)))
            images.append(to_uint8_images(to_model_input(batch["image"], IMAGE_SIZE)))
            labels.append(batch["label"].numpy())
    if not images:
        raise DcganError(f"the {'+'.join(splits)} split(s) of {data_root} hold no faces; change dcgan.real_splits")
    faces, label = torch.cat(images), np.concatenate(labels)
    photo = np.arange(len(faces))
    if flip:
        return torch.cat([faces, faces.flip(2)]), np.concatenate([photo, photo]), np.concatenate([label, label])
    return faces, photo, label


def frechet_report(embed: Embed, real: torch.Tensor, halves: tuple[np.ndarray, np.ndarray], fake: torch.Tensor) -> dict:
    """FD of generated vs real at matched counts, and its floor, in one feature space.

    Each half of the real views (n each) is compared with its own n generated samples, and the two distances are
    averaged; the floor is the distance between the two real halves: every FD here has n samples on each side, so
    the floor carries the same small-sample bias as the measurement.
    """
    a, b = halves
    n = len(a)
    real_features, fake_features = embed_all(embed, real), embed_all(embed, fake)
    fd = (
        frechet_distance(fake_features[:n], real_features[a]) + frechet_distance(fake_features[n:], real_features[b])
    ) / 2
    floor = frechet_distance(real_features[a], real_features[b])
    return {"fd": fd, "floor": floor, "real_features": real_features, "fake_features": fake_features}


def evaluate_generator(
    gen: Generator, section: DcganParams, train: TrainParams, data_root: Path, f_path: Path, device: torch.device
) -> dict[str, Any]:
    """The numbers of metrics/dcgan.json: fd_f beside its floor, the diversity guard, and FID when asked."""
    real, photo, identity = real_views(data_root, section.real_splits, section.eval_flip)
    a, b = split_halves(photo, identity)
    n = min(len(a), len(b))
    if n < 2:
        raise DcganError(
            f"{len(real)} real faces cannot make two halves for the floor; add splits to dcgan.real_splits"
        )
    halves = (a[:n], b[:n])
    fake = sample(gen, fixed_noise(2 * n, section.nz, train.seed + 1), train.batch_size)
    encoder = load_f(f_path, device)
    in_f = frechet_report(encoder.embed, real, halves, fake)
    used = np.concatenate(halves)
    diversity_gen = mean_pairwise_distance(in_f["fake_features"])
    diversity_real = mean_pairwise_distance(in_f["real_features"][used])
    metrics: dict[str, Any] = {
        "fd_f": round(in_f["fd"], 5),
        "fd_f_floor": round(in_f["floor"], 5),
        "fd_f_ratio": round(in_f["fd"] / in_f["floor"], 3) if in_f["floor"] > 0 else None,
        "diversity_gen": round(diversity_gen, 4),
        "diversity_real": round(diversity_real, 4),
        "diversity_ratio": round(diversity_gen / diversity_real, 3),
        "samples": int(2 * n),  # generated and real, each; every FD compares n = samples / 2 with n
        "real_faces": len(np.unique(photo[used])),
    }
    if section.inception is not None:
        in_inception = frechet_report(load_inception(section.inception, device), real, halves, fake)
        metrics["fid"] = round(in_inception["fd"], 3)
        metrics["fid_floor"] = round(in_inception["floor"], 3)
    return metrics


# ---- the stage ------------------------------------------------------------------------------------------------------


def train_dcgan(params: Params, say: Callable[[str], None] = print) -> DcganResult:
    """Train the DCGAN per params.train and params.dcgan on `<pack.out_dir>/faces` (train split), then judge it.

    Writes the model, the curves, a grid per logged step, the final grid and the GIF; returns the metrics.

    Raises:
        DcganError: for data that cannot train or judge it.
        pipeline.train.checkpoint.CheckpointError: for a corrupt or foreign checkpoint file.
    """
    train, section = params.train, params.dcgan
    data_root = Path(params.pack.out_dir) / "faces"
    f_path = Path(params.pretrain_f.model)
    if not f_path.is_file():
        raise DcganError(f"{f_path} not found; train f first with `dvc repro pretrain_f`")
    data: FaceData = read_faces(data_root)
    with runtime(train.runtime, train.seed) as rt:
        gen, disc = Generator(section.nz, section.ngf), Discriminator(section.ndf)
        gen_net, disc_net = rt.prepare(gen), rt.prepare(disc)
        betas = (train.beta1, train.beta2)
        trainer = Trainer(
            rt,
            train,
            {"G": gen, "D": disc},
            {
                "G": torch.optim.Adam(gen.parameters(), train.lr, betas),
                "D": torch.optim.Adam(disc.parameters(), train.lr, betas),
            },
            run_key(train, section, data.data_id),
            checkpoint=Path(section.checkpoint_dir) / CHECKPOINT_FILE,
            live_dir=Path(section.live_dir),
        )
        message = trainer.start()
        if rt.is_main:
            say(f"train_dcgan: {message}")
        stream = ShardStream(data.train, train.batch_size, shuffle=True, seed=train.seed, drop_last=True)
        if len(stream) == 0:
            raise DcganError(
                f"{len(data.train)} training faces over {rt.world_size} rank(s) make no batch of {train.batch_size}; "
                "lower train.batch_size"
            )
        noise = fixed_noise(section.grid_samples, section.nz, train.seed)
        images_dir = Path(section.live_dir) / "plots" / "images"

        def grid(step: int) -> None:
            if rt.is_main:
                trainer.live.image(f"{FRAMES}/step_{step:06d}.png", sample_grid(gen, noise, train.batch_size), step)

        if trainer.step == 0:  # a fresh run: no grid of an earlier run may reach this run's GIF
            for stale in (images_dir / FRAMES).glob("step_*.png"):
                stale.unlink()
            grid(0)
        augment = Augment(flip=section.flip, crop=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
        step_fn = with_grids(gan_step(rt, gen_net, disc_net, trainer, section, augment), trainer, grid)
        fit = trainer.fit(stream, step_fn)
        run = fit.record(rt.world_size, rt.device)
        metrics: dict[str, Any] = {}
        if rt.is_main:
            trainer.live.image(FINAL_GRID, sample_grid(gen, fixed_noise(64, section.nz, train.seed), train.batch_size))
            run["gif_frames"] = write_gif(images_dir / FRAMES, images_dir / GIF, trainer.step)
            started, cpu_start = time.perf_counter(), time.process_time()
            metrics = evaluate_generator(gen, section, train, data_root, f_path, rt.device)
            run["eval_seconds"] = round(time.perf_counter() - started, 2)
            run["eval_cpu_seconds"] = round(time.process_time() - cpu_start, 2)
            arch = {"nz": section.nz, "ngf": section.ngf, "ndf": section.ndf}
            payload = {
                "generator": gen.state_dict(),
                "discriminator": disc.state_dict(),
                "arch": arch,
                "params": {"train": resolved(train), "dcgan": resolved(section)},
                "run": trainer.key.record(),
                "metrics": metrics,
            }
            save_checkpoint(Path(section.model), payload, DCGAN_FORMAT)
            say(
                f"train_dcgan: {run['steps_run']} steps in {fit.seconds:.1f} s ({run['images_per_s']:.0f} img/s), "
                f"evaluation {run['eval_seconds']:.1f} s"
            )
        trainer.close()
    return DcganResult(metrics, run)
