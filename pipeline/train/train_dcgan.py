"""`train_dcgan`: the DCGAN of aligned faces at 64 x 64, its fixed-noise grids and GIF, and its Fréchet distances."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.params import DcganParams, TrainParams, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.runner import StageError
from pipeline.core.storage import atomic_write_bytes
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, to_model_input
from pipeline.evaluate.frechet import InceptionError, load_inception
from pipeline.evaluate.gan import evaluate_generator
from pipeline.models.dcgan import IMAGE_SIZE, Discriminator, Generator, fixed_noise, sample, save_dcgan
from pipeline.models.diffaugment import diff_augment
from pipeline.train.checkpoint import RunKey, loop_params
from pipeline.train.classifier import read_faces
from pipeline.train.skeleton import ModelStage, Networks

FRAMES = "samples"  # plots/images/samples/step_NNNNNN.png: the fixed-noise grid at every logged step
FINAL_GRID = "samples_final.png"
GIF = "training.gif"
GRID_COLS = 8
GIF_ROWS = 2  # the GIF shows the first two rows of each grid: the report inlines it
# Keys of the `dcgan` section that never change the trained weights: how the result is judged and where files go.
NOT_SHAPING = ("real_splits", "eval_flip", "inception", "model", "metrics", "details", "run_log", "live_dir")
NOT_SHAPING += ("checkpoint_dir",)


class TrainDcgan(ModelStage):
    """DCGAN (pytorch/examples' G and D, Adam from the shared `train` section) on the train split of the face
    shards, with a fixed-noise grid per logged step and their GIF; judged by fd_f in f's space."""

    name, section_name, loop_name = "train_dcgan", "dcgan", "train"
    show = ("train/loss_D", "train/loss_G")
    errors = (InceptionError,)

    def read_data(self) -> ShardDataset:
        self.data_root = Path(self.params.pack.out_dir) / "faces"
        self.f_path = Path(self.params.pretrain_f.model)
        if not self.f_path.is_file():
            raise StageError(f"{self.f_path} not found; train f first with `dvc repro pretrain_f`")
        if self.section.inception is not None:
            load_inception(self.section.inception)  # a missing or foreign file is said before training, not after
        self.data = read_faces(self.data_root)
        return self.data.train

    def build(self) -> Networks:
        train, section = self.loop, self.section
        self.gen, self.disc = Generator(section.nz, section.ngf), Discriminator(section.ndf, section.spectral_norm)
        self.gen_net, self.disc_net = self.rt.prepare(self.gen), self.rt.prepare(self.disc)
        betas = (train.beta1, train.beta2)
        optimizers = {
            "G": torch.optim.Adam(self.gen.parameters(), train.lr, betas),
            "D": torch.optim.Adam(self.disc.parameters(), section.lr_d or train.lr, betas),
        }
        self.policy = tuple(section.diffaugment)
        modules = {"G": self.gen, "D": self.disc}
        if section.ema:  # the average starts at G's initial weights and is checkpointed with them
            self.gen_ema = copy.deepcopy(self.gen).requires_grad_(False)
            modules["G_ema"] = self.gen_ema
        self.augment = Augment(flip=section.flip, crop=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
        self.noise = fixed_noise(section.grid_samples, section.nz, train.seed)
        return Networks(modules, optimizers)

    def run_key(self) -> RunKey:
        return run_key(self.loop, self.section, self.data.data_id)

    def before_fit(self) -> None:
        if self.trainer.step == 0:  # a fresh run: no grid of an earlier run may reach this run's GIF
            for stale in (self.images_dir / FRAMES).glob("step_*.png"):
                stale.unlink()
            self.after_log(0)

    @property
    def sampler(self) -> Generator:
        """The G that draws the grids, the metrics' samples and dcgan.pt: the weights' average with `dcgan.ema`."""
        return self.gen_ema if self.section.ema else self.gen

    @property
    def images_dir(self) -> Path:
        return Path(self.section.live_dir) / "plots" / "images"

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One DCGAN iteration: a D step on real and generated faces, then a G step, each with its own Adam.

        With `dcgan.diffaugment`, D sees every image, real or generated, through freshly drawn transforms.
        """
        rt, section = self.rt, self.section
        real = rt.memory_format(to_model_input(rt.to_device(batch["image"]), IMAGE_SIZE, self.augment, generator))
        noise = torch.randn(real.shape[0], section.nz, generator=generator).to(rt.device)  # the same on any device

        # ---- D step: real faces up, G's faces (detached) down; with r1, D's slope at the real faces too
        with rt.autocast():
            seen = diff_augment(real, self.policy, generator)
            if section.r1:
                seen = seen.detach().requires_grad_(True)
            real_logits = self.disc_net(seen).float()
            fake = self.gen_net(noise)
            fake_logits = self.disc_net(diff_augment(fake.detach(), self.policy, generator)).float()
        loss_d = discriminator_loss(real_logits, fake_logits, section.real_label, section.loss)
        penalty = r1_penalty(real_logits, seen, section.r1) if section.r1 else None
        self.trainer.backward(loss_d if penalty is None else loss_d + penalty, "D")

        # ---- G step: G's faces up against the updated D (BCE: the non-saturating loss; hinge: -D(G(z)))
        with rt.autocast():
            fooled_logits = self.disc_net(diff_augment(fake, self.policy, generator)).float()
        loss_g = generator_loss(fooled_logits, section.loss)
        self.trainer.backward(loss_g, "G")
        if section.ema:
            update_average(self.gen_ema, self.gen, section.ema)

        return {
            "train/loss_D": loss_d.detach(),
            "train/loss_G": loss_g.detach(),
            "train/D_x": torch.sigmoid(real_logits.detach()).mean(),
            "train/D_G_z_before_D_step": torch.sigmoid(fake_logits.detach()).mean(),
            "train/D_G_z_at_G_step": torch.sigmoid(fooled_logits.detach()).mean(),
        } | ({} if penalty is None else {"train/r1": penalty.detach()})

    def after_log(self, step: int) -> None:
        """The fixed-noise grid of this step (a frame of the GIF)."""
        if self.rt.is_main:
            grid = image_grid(list(sample(self.sampler, self.noise, self.loop.batch_size).numpy()), cols=GRID_COLS)
            self.trainer.live.image(f"{FRAMES}/step_{step:06d}.png", grid, step)

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self.rt.is_main:
            return {}, {}
        return evaluate_generator(self.sampler, self.section, self.loop, self.data_root, self.f_path, self.rt.device)

    def save(self, metrics: dict[str, Any]) -> None:
        """dcgan.pt, the final grid of 64 fixed-noise faces, and the GIF of the grids."""
        train, section = self.loop, self.section
        final = sample(self.sampler, fixed_noise(64, section.nz, train.seed), train.batch_size)
        self.trainer.live.image(FINAL_GRID, image_grid(list(final.numpy()), cols=GRID_COLS))
        write_gif(self.images_dir / FRAMES, self.images_dir / GIF, self.trainer.step)
        info = {"params": {"train": resolved(train), "dcgan": resolved(section)}, "run": self.trainer.key.record()}
        save_dcgan(Path(section.model), self.sampler, self.disc, info | {"metrics": metrics})

    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        return (
            f"train_dcgan: fd_f {metrics['fd_f']:.4f} (real-vs-real floor {metrics['fd_f_floor']:.4f}, ratio "
            f"{metrics['fd_f_ratio']}), diversity generated/real {metrics['diversity_ratio']:.3f}, on "
            f"{details['samples']} generated and {details['samples']} real views of {details['real_faces']} faces"
        )


def run_key(train: TrainParams, section: DcganParams, data_id: str) -> RunKey:
    """What the weights, curves and grids depend on: both sections' shaping params, the code and the data."""
    loop = loop_params(resolved(train), ("checkpoint_every",))
    shaping = shaping_params(resolved(section), NOT_SHAPING)
    return RunKey({"train": loop, "dcgan": shaping}, code_version("pipeline.train.train_dcgan"), data_id)


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float, loss: str = "bce"
) -> torch.Tensor:
    """D's loss. bce: cross-entropy, real faces towards `real_label`, generated ones towards 0. hinge: SN-GAN's
    max(0, 1 - D(x)) + max(0, 1 + D(G(z))), which stops pushing a face once it is past the margin.

    With `real_label` < 1 (one-sided label smoothing) D gains nothing from calling a real face surer than
    `real_label`, so it cannot run its logits off to infinity and starve G of gradient: at the CPU default's 600
    steps, D(G(z)) otherwise fell to 0.002 by step 100 for some seeds and G collapsed to one face.
    """
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    bce = F.binary_cross_entropy_with_logits
    return bce(real_logits, torch.full_like(real_logits, real_label)) + bce(fake_logits, torch.zeros_like(fake_logits))


def r1_penalty(real_logits: torch.Tensor, seen: torch.Tensor, weight: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): weight / 2 x the mean over the batch of |d D(x) / d x|^2 at the real images x
    that D saw (`seen` must require grad); differentiable, so D's step lowers it."""
    (slope,) = torch.autograd.grad(real_logits.sum(), seen, create_graph=True)
    return weight / 2 * slope.float().pow(2).flatten(1).sum(1).mean()


def generator_loss(fooled_logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """G's loss on D's logits of its faces: bce, -log D(G(z)) (non-saturating); hinge, -D(G(z))."""
    if loss == "hinge":
        return -fooled_logits.mean()
    return F.binary_cross_entropy_with_logits(fooled_logits, torch.ones_like(fooled_logits))


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, weight by weight; buffers (BatchNorm's running
    statistics) are copied, as sampling normalises with batch statistics anyway."""
    for mean, current in zip(average.parameters(), model.parameters(), strict=True):
        mean.lerp_(current, 1 - decay)
    for mean, current in zip(average.buffers(), model.buffers(), strict=True):
        mean.copy_(current)


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
