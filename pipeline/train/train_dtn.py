"""`train_dtn`: the Domain Transfer Network photo -> emoji over a frozen f: its D and G steps, schedules and grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.core.params import DtnParams, TrainParams, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import ShardDataset, all_images, to_model_input, to_uint8_images
from pipeline.evaluate.dtn import TRAIT_MARGIN, embed_all, encode_emoji, evaluate_dtn, read_data
from pipeline.evaluate.retrieval import self_ranks
from pipeline.models.diffaugment import diff_augment
from pipeline.models.dtn import (
    EmojiDecoder,
    TripleDiscriminator,
    discriminator_loss,
    distance,
    generator_gan_loss,
    save_dtn,
    total_variation,
)
from pipeline.models.face_encoder import load_f
from pipeline.train.checkpoint import RunKey, loop_params
from pipeline.train.skeleton import ModelStage, Networks

# Keys that never change the trained weights: where things go, how often they are logged, the evaluation's own knobs.
NOT_SHAPING_TRAIN = ("log_every", "eval_every", "checkpoint_every")
NOT_SHAPING_DTN = ("grid_photos", "trait_steps", "trait_lr", "skin_tone_bins", "model", "metrics", "details")
NOT_SHAPING_DTN += ("run_log", "live_dir", "checkpoint_dir")


class Schedule(nn.Module):
    """Which network a step updates. `fixed`: d_steps D updates then g_steps G updates every step. `adaptive`
    (davrempe's port): D only until its source loss falls below `low`, then G only until that loss rises above `high`.

    The phase is a buffer, so a checkpoint resumes it.
    """

    def __init__(self, kind: str, d_steps: int, g_steps: int, low: float, high: float) -> None:
        super().__init__()
        self.kind, self.d_steps, self.g_steps, self.low, self.high = kind, d_steps, g_steps, low, high
        self.register_buffer("training_g", torch.zeros((), dtype=torch.bool))

    def plan(self) -> tuple[int, int]:
        """(D updates, G updates) of this step."""
        if self.kind == "fixed":
            return self.d_steps, self.g_steps
        return (0, 1) if bool(self.training_g) else (1, 0)

    def observe(self, source_loss: float) -> None:
        """Switch phase on D's latest source loss (adaptive only)."""
        if self.kind != "adaptive":
            return
        if not bool(self.training_g) and source_loss < self.low:
            self.training_g.fill_(True)
        elif bool(self.training_g) and source_loss > self.high:
            self.training_g.fill_(False)


class TrainDtn(ModelStage):
    """G = g(f(x)) over a frozen f, a 3-way D, the paper's losses (L_GANG, L_CONST, L_TID, L_TV); source photos from
    the face shards, target avatars from the avatar shards. Optimiser and loop: the shared `train` section."""

    name, section_name, loop_name = "train_dtn", "dtn", "train"
    show = ("train/loss_D", "train/loss_G")
    one_process = True

    def read_data(self) -> ShardDataset:
        self.data = read_data(Path(self.params.pack.out_dir))
        return self.data.faces_train

    def build(self) -> Networks:
        rt, train, section = self.rt, self.loop, self.section
        self.encoder = load_f(Path(self.params.pretrain_f.model), rt.device)
        self.encoder.net.fold_batch_norm()  # f stays frozen: its BatchNorms fold into the convs, 1.6x faster on the CPU
        self.encoder.requires_grad_(False)
        if rt.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.arch = {"embed_dim": self.encoder.net.embed_dim, "ngf": section.ngf, "size": section.emoji_size}
        self.arch["dropout"] = section.dropout
        self.g, self.d = EmojiDecoder(**self.arch), TripleDiscriminator(section.ndf, section.emoji_size)
        self.schedule = Schedule(
            section.schedule, section.d_steps, section.g_steps, section.adaptive_low, section.adaptive_high
        )
        self.g_net, self.d_net = rt.prepare(self.g), rt.prepare(self.d)
        betas = (train.beta1, train.beta2)
        optimizers = {
            name: torch.optim.Adam(net.parameters(), train.lr, betas) for name, net in (("G", self.g), ("D", self.d))
        }
        return Networks({"G": self.g, "D": self.d, "schedule": self.schedule}, optimizers)

    def run_key(self) -> RunKey:
        self.f_key = str(self.encoder.info.get("run", {}).get("key", ""))
        return run_key(self.loop, self.section, self.data.data_id, self.f_key)

    def before_fit(self) -> None:
        """f of every training photo and avatar, once (f is frozen and the inputs are not augmented), and the grid's
        test photos."""
        data, encoder = self.data, self.encoder
        face_images, _ = all_images([data.faces_train])
        self.face_embeddings = embed_all(encoder, face_images)
        self.position_of = {int(row): i for i, row in enumerate(data.faces_train.rows)}
        avatar_uint8, _ = all_images([data.avatars_train])
        self.avatar_images = to_model_input(avatar_uint8.to(self.rt.device), self.section.emoji_size)
        self.avatar_embeddings = embed_all(encoder, avatar_uint8)
        grid_at = grid_positions(data.faces_test, self.section.grid_photos)
        self.grid_photos = data.faces_test.gather(grid_at)["image"]
        self.grid_names = list(data.faces_test.index["identity"].astype(str).to_numpy()[grid_at])
        self.grid_embeddings = embed_all(encoder, self.grid_photos)

    def judge(self, groups: tuple[torch.Tensor, ...], generator: torch.Generator) -> list[torch.Tensor]:
        """D's logits of each group, each group on its own, through `dtn.diffaugment`'s transforms.

        D's BatchNorm normalises each group alone, in D updates and G updates alike (as DCGAN feeds real and fake
        batches apart). A mixed batch in one update and an all-fake one in the other let G fool a D whose statistics
        it had changed: D called noise a real avatar and g learned to draw noise.
        """
        policy = tuple(self.section.diffaugment)
        with self.rt.autocast():
            return [
                self.d_net(self.rt.memory_format(diff_augment(group, policy, generator))).float() for group in groups
            ]

    def draw(self, embeddings: torch.Tensor) -> torch.Tensor:
        """g of f embeddings: emoji (B, 3, S, S)."""
        with self.rt.autocast():
            return self.g_net(embeddings).float()

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]:
        """D updates, then G updates, on a batch of source photos and as many random target avatars; during the first
        `decoder_steps`, g alone learns to decode f of avatars."""
        section, schedule, trainer = self.section, self.schedule, self.trainer
        if trainer.step < section.decoder_steps:
            return self.decoder_step(len(batch["index"]), generator)
        # ---- inputs: f of the photos (precomputed: f is frozen) and random target avatars
        positions = torch.tensor([self.position_of[int(row)] for row in batch["index"]])
        size = len(positions)
        source = self.face_embeddings[positions]  # (B, D)
        pick = torch.randint(len(self.avatar_images), (size,), generator=generator)
        target, target_embedding = self.rt.memory_format(self.avatar_images[pick]), self.avatar_embeddings[pick]
        embeddings = torch.cat([source, target_embedding])  # (2B, D)
        d_updates, g_updates = schedule.plan()
        out: dict[str, Any] = {"train/d_updates": d_updates, "train/g_updates": g_updates}
        # g changes only in G updates: the D updates and the first G update share one forward pass of g
        fakes = self.draw(embeddings) if g_updates else None  # (2B, 3, S, S)

        # ---- D step: G(source) -> 0, G(target) -> 1, real avatar -> 2
        for _ in range(d_updates):
            if fakes is None:
                with torch.no_grad():
                    fakes = self.draw(embeddings)
            loss_d, source_loss = discriminator_loss(*self.judge((*fakes.detach().split(size), target), generator))
            trainer.backward(loss_d, "D")
            schedule.observe(float(source_loss.detach()))
            out["train/loss_D"], out["train/loss_D_source"] = loss_d.detach(), source_loss.detach()

        # ---- G step: L_GANG + alpha L_CONST + beta L_TID + gamma L_TV
        for i in range(g_updates):
            if i > 0:
                fakes = self.draw(embeddings)
            assert fakes is not None
            fake_source, fake_target = fakes.split(size)
            source_logits, target_logits = self.judge((fake_source, fake_target), generator)
            gang = generator_gan_loss(source_logits, target_logits)
            with self.rt.autocast():
                probe = encode_emoji(self.encoder, self.rt.memory_format(fake_source)).float()
            const = distance(source, probe, section.const_distance)
            tid = distance(fake_target, target, section.tid_distance)
            tv = total_variation(fakes)
            loss_g = gang + section.alpha * const + section.beta * tid + section.gamma * tv
            trainer.backward(loss_g, "G")
            source_loss = nn.functional.cross_entropy(
                source_logits.detach(), torch.zeros(size, dtype=torch.long, device=source_logits.device)
            )
            schedule.observe(float(source_loss))
            out.update({"train/loss_G": loss_g.detach(), "train/L_GANG": gang.detach()})
            out.update({"train/L_CONST": const.detach(), "train/L_TID": tid.detach(), "train/L_TV": tv.detach()})
        return out

    def decoder_step(self, size: int, generator: torch.Generator) -> dict[str, Any]:
        """g as a decoder of f's avatar embeddings: beta L_TID + gamma L_TV on random target avatars, one G update.
        It starts the GAN from a g that already draws avatars (the issue's lever; Taigman et al. start from noise)."""
        pick = torch.randint(len(self.avatar_images), (size,), generator=generator)
        target = self.rt.memory_format(self.avatar_images[pick])
        fake = self.draw(self.avatar_embeddings[pick])
        tid, tv = distance(fake, target, self.section.tid_distance), total_variation(fake)
        loss = self.section.beta * tid + self.section.gamma * tv
        self.trainer.backward(loss, "G")
        return {"train/loss_G": loss.detach(), "train/L_TID": tid.detach(), "train/L_TV": tv.detach()}

    def evaluate(self) -> dict[str, float]:
        """L_CONST and the median retrieval rank of the grid's test photos."""
        probes = encode_emoji(self.encoder, self.g(self.grid_embeddings))
        const = distance(self.grid_embeddings, probes, self.section.const_distance)
        ranks = self_ranks(probes.cpu(), self.grid_embeddings.cpu())
        return {"eval/L_CONST": float(const), "eval/median_rank": ranks.median}

    def after_log(self, step: int) -> None:
        """The photo -> emoji grid of this step."""
        grid = pair_grid(self.grid_photos, self.g(self.grid_embeddings), self.grid_names)
        self.trainer.live.image(f"photo_emoji/{step:06d}.png", grid)

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.g.eval()
        return evaluate_dtn(self.encoder, self.g, self.section, self.loop.seed, self.data)

    @torch.no_grad()
    def save(self, metrics: dict[str, Any]) -> None:
        """dtn.pt and the final photo -> emoji grid."""
        final = pair_grid(self.grid_photos, self.g(self.grid_embeddings).cpu(), self.grid_names)
        self.trainer.live.image("photo_emoji_final.png", final)
        info = {"params": resolved(self.section), "train": resolved(self.loop), "f_key": self.f_key}
        info |= {"metrics": metrics, "run": self.trainer.key.record()}
        save_dtn(Path(self.section.model), self.g.state_dict(), self.d.state_dict(), self.arch, info)

    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        traits = (
            f"{metrics['traits_read']} of {metrics['traits_compared']} traits at >= chance + {TRAIT_MARGIN} on "
            f"{details['people']} held-out people (f itself carries {details['f_traits_read']} from avatars to photos)"
            if metrics["traits_compared"]
            else "no held-out people with known traits"
        )
        return (
            f"train_dtn: test L_CONST {metrics['test_const']:.4f}, L_TID {metrics['test_tid']:.4f} (the mean avatar: "
            f"{metrics['tid_mean_avatar']:.4f}); median rank {metrics['median_rank']:g} of {details['gallery']} "
            f"(chance {metrics['chance_rank']:g}); identity top-1 {metrics['identity_top1']:.3f} (chance "
            f"{metrics['chance_top1']:.3f}); {traits}"
        )


def run_key(train: TrainParams, section: DtnParams, data_id: str, f_key: str) -> RunKey:
    """What the DTN's weights depend on: both sections' shaping params, the code, the shards and f."""
    params = {"train": loop_params(resolved(train), NOT_SHAPING_TRAIN)}
    params["dtn"] = shaping_params(resolved(section), NOT_SHAPING_DTN)
    return RunKey(params, code_version("pipeline.train.train_dtn"), {"the shards": data_id, "f.pt": f_key})


def pair_grid(photos: torch.Tensor, emoji: torch.Tensor, names: list[str], cols: int = 4) -> np.ndarray:
    """Photo | emoji pairs side by side, `cols` pairs per row, each photo labelled with its identity."""
    side = emoji.shape[-1]
    faces = to_uint8_images(to_model_input(photos, side)).numpy()
    tiles, labels = [], []
    for face, generated, name in zip(faces, to_uint8_images(emoji).numpy(), names, strict=True):
        tiles += [face, generated]
        labels += [name[:10], ""]
    return image_grid(tiles, cols=2 * cols, labels=labels)


def grid_positions(data: ShardDataset, count: int) -> np.ndarray:
    """Up to `count` test photos (sorted positions): the first photo of every identity, then the next ones."""
    identities = data.index["identity"].astype(str).to_numpy()
    first = pd.Series(range(len(identities))).groupby(identities).transform("min").to_numpy()
    is_first = first == np.arange(len(identities))
    order = np.concatenate([np.flatnonzero(is_first), np.flatnonzero(~is_first)])
    return np.sort(order[:count])
