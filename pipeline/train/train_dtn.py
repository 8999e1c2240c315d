"""`train_dtn`: the Domain Transfer Network photo -> emoji over a frozen f, its D/G schedules, evaluation and grids."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.core.params import DtnParams, Params, TrainParams, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import ShardDataset, ShardStream, to_model_input
from pipeline.evaluate.classify import chance_topk
from pipeline.evaluate.retrieval import identity_centroids, identity_topk, self_ranks
from pipeline.evaluate.traits import (
    agreement,
    class_counts,
    embedding_probe,
    predict_traits,
    train_trait_net,
    trait_classes,
)
from pipeline.models.dtn import EmojiDecoder, TripleDiscriminator, to_encoder_input
from pipeline.models.face_encoder import FaceEncoder, load_f
from pipeline.train.checkpoint import CHECKPOINT_FILE, RunKey, load_checkpoint, save_checkpoint
from pipeline.train.dtn_losses import (
    discriminator_loss,
    distance,
    generator_gan_loss,
    total_variation,
)
from pipeline.train.loop import Trainer
from pipeline.train.runtime import Runtime, runtime

DTN_FORMAT = "img2caricature/dtn-v1"
# Keys that never change the trained weights: where things go, how often they are logged, the evaluation's own knobs.
NOT_SHAPING_TRAIN = ("log_every", "eval_every", "checkpoint_every")
NOT_SHAPING_DTN = ("grid_photos", "trait_steps", "trait_lr", "skin_tone_bins", "model", "metrics", "details")
NOT_SHAPING_DTN += ("run_log", "live_dir", "checkpoint_dir")
TRAIT_SIZE = 32  # the trait classifier sees avatars and emoji at this side: the traits are large, the CPU is small
AGREEMENT_MARGIN = 0.15  # a trait counts as kept when its agreement beats its chance by this much


class DtnError(ValueError):
    """The shards or f cannot train the DTN as asked; the message says what to do."""


@dataclass(frozen=True)
class DtnResult:
    """What a train_dtn run produced: the flat metrics, the long details, and what the run itself did."""

    metrics: dict[str, Any]
    details: dict[str, Any]
    run: dict[str, Any]


@dataclass(frozen=True)
class DtnData:
    """The source photos (face shards) and target avatars (avatar shards) a DTN run reads."""

    faces_train: ShardDataset
    faces_test: ShardDataset
    avatars_train: ShardDataset
    avatars_held_out: list[ShardDataset]  # val and test: the trait classifier's ceiling and the test L_TID
    data_id: str


def _shards_id(root: Path) -> str:
    index = pd.read_parquet(root / "index.parquet", columns=["shard", "shard_sha256"]).drop_duplicates("shard")
    return "".join(f"{row.shard}:{row.shard_sha256}\n" for row in index.sort_values("shard").itertuples())


def read_data(shards: Path) -> DtnData:
    """Open the face and avatar splits under `shards` (checksums verified).

    Raises:
        DtnError: when a split the DTN needs is empty.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    faces, avatars = shards / "faces", shards / "avatars"
    data = DtnData(
        ShardDataset(faces, "train"),
        ShardDataset(faces, "test"),
        ShardDataset(avatars, "train"),
        [ShardDataset(avatars, "val"), ShardDataset(avatars, "test")],
        hashlib.sha256((_shards_id(faces) + _shards_id(avatars)).encode()).hexdigest()[:16],
    )
    for name, split in (("faces train", data.faces_train), ("faces test", data.faces_test)):
        if len(split) == 0:
            raise DtnError(f"the {name} split under {shards} is empty; crawl more photos or raise pack.test_fraction")
    if len(data.avatars_train) == 0 or sum(len(s) for s in data.avatars_held_out) == 0:
        raise DtnError(f"the avatar splits under {shards} are empty; raise crawl.avatars.count")
    return data


def build_models(section: DtnParams, embed_dim: int) -> tuple[EmojiDecoder, TripleDiscriminator, dict[str, Any]]:
    """g and D of the section, and g's constructor arguments (saved in dtn.pt)."""
    arch = {"embed_dim": embed_dim, "ngf": section.ngf, "size": section.emoji_size, "dropout": section.dropout}
    return EmojiDecoder(**arch), TripleDiscriminator(section.ndf, section.emoji_size), arch


def run_key(train: TrainParams, section: DtnParams, data_id: str, f_key: str) -> RunKey:
    """What the DTN's weights depend on: both sections' shaping params, the code, the shards and f."""
    loop = shaping_params(resolved(train), NOT_SHAPING_TRAIN)
    loop["runtime"] = {k: v for k, v in loop["runtime"].items() if k != "threads"}
    params = {"train": loop, "dtn": shaping_params(resolved(section), NOT_SHAPING_DTN)}
    return RunKey(params, code_version("pipeline.train.train_dtn"), f"{data_id}/{f_key}")


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


@torch.no_grad()
def embed_all(encoder: FaceEncoder, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """f of uint8 aligned images, (N, D) on f's device."""
    return torch.cat([encoder.embed(chunk) for chunk in images.split(batch)])


def encode_emoji(encoder: FaceEncoder, emoji: torch.Tensor) -> torch.Tensor:
    """f(G(x)): g's output resized to f's input side, then f (gradients flow through f into g)."""
    return encoder.net.embed(to_encoder_input(emoji, encoder.input_size))


def all_images(splits: list[ShardDataset]) -> tuple[torch.Tensor, pd.DataFrame]:
    """Every image of the splits, uint8 (N, H, W, 3), and their index rows."""
    images = torch.cat([s.gather(np.arange(len(s)))["image"] for s in splits if len(s)])
    rows = pd.concat([s.index for s in splits if len(s)])
    return images, rows


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    return ((x.detach().float().cpu().permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def pair_grid(photos: torch.Tensor, emoji: torch.Tensor, names: list[str], cols: int = 4) -> np.ndarray:
    """Photo | emoji pairs side by side, `cols` pairs per row, each photo labelled with its identity."""
    side = emoji.shape[-1]
    faces = to_uint8(to_model_input(photos, side))
    tiles, labels = [], []
    for face, generated, name in zip(faces, to_uint8(emoji), names, strict=True):
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


@torch.no_grad()
def generate(encoder: FaceEncoder, g: EmojiDecoder, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """G(x) = g(f(x)) of uint8 aligned faces, (N, 3, S, S) in [-1, 1] on the CPU."""
    was_training = g.training
    g.eval()
    out = torch.cat([g(encoder.embed(chunk)).cpu() for chunk in images.split(batch)])
    g.train(was_training)
    return out


def dtn_step(
    rt: Runtime,
    encoder: FaceEncoder,
    nets: tuple[nn.Module, nn.Module],
    trainer: Trainer,
    schedule: Schedule,
    section: DtnParams,
    faces: tuple[torch.Tensor, dict[int, int]],
    avatars: tuple[torch.Tensor, torch.Tensor],
) -> Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor | float]]:
    """One DTN step on a batch of source photos and as many random target avatars.

    Args:
        faces: f of every training photo (N, D) and the index row -> position map.
        avatars: every training avatar at emoji size (M, 3, S, S) in [-1, 1] and its f (M, D).
    """
    g_net, d_net = nets
    face_embeddings, position_of = faces
    avatar_images, avatar_embeddings = avatars

    def judge(*groups: torch.Tensor) -> list[torch.Tensor]:
        # D's BatchNorm normalises each group on its own, in D updates and G updates alike (as DCGAN feeds real and
        # fake batches apart). A mixed batch in one update and an all-fake one in the other let G fool a D whose
        # statistics it had changed: D called noise a real avatar and g learned to draw noise.
        with rt.autocast():
            return [d_net(rt.memory_format(group)).float() for group in groups]

    def generate_fakes(embeddings: torch.Tensor) -> torch.Tensor:
        with rt.autocast():
            return g_net(embeddings).float()

    def train_step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor | float]:
        # ---- inputs: f of the photos (precomputed: f is frozen) and random target avatars
        positions = torch.tensor([position_of[int(row)] for row in batch["index"]])
        source = face_embeddings[positions]  # (B, D)
        pick = torch.randint(len(avatar_images), (len(positions),), generator=generator)
        target, target_embedding = rt.memory_format(avatar_images[pick]), avatar_embeddings[pick]
        d_updates, g_updates = schedule.plan()
        out: dict[str, torch.Tensor | float] = {"train/d_updates": d_updates, "train/g_updates": g_updates}
        embeddings = torch.cat([source, target_embedding])  # (2B, D)
        # g changes only in G updates: the D updates and the first G update share one forward pass of g
        fakes = generate_fakes(embeddings) if g_updates else None  # (2B, 3, S, S)
        # ---- D step: G(source) -> 0, G(target) -> 1, real avatar -> 2
        for _ in range(d_updates):
            if fakes is None:
                with torch.no_grad():
                    fakes = generate_fakes(embeddings)
            loss_d, source_loss = discriminator_loss(*judge(*fakes.detach().split(len(positions)), target))
            trainer.backward(loss_d, "D")
            schedule.observe(float(source_loss.detach()))
            out["train/loss_D"], out["train/loss_D_source"] = loss_d.detach(), source_loss.detach()
        # ---- G step: L_GANG + alpha L_CONST + beta L_TID + gamma L_TV
        for i in range(g_updates):
            if i > 0:
                fakes = generate_fakes(embeddings)
            assert fakes is not None
            fake_source, fake_target = fakes.split(len(positions))
            source_logits, target_logits = judge(fake_source, fake_target)
            gang = generator_gan_loss(source_logits, target_logits)
            with rt.autocast():
                probe = encode_emoji(encoder, rt.memory_format(fake_source)).float()
            const = distance(source, probe, section.const_distance)
            tid = distance(fake_target, target, section.tid_distance)
            tv = total_variation(fakes)
            loss_g = gang + section.alpha * const + section.beta * tid + section.gamma * tv
            trainer.backward(loss_g, "G")
            source_loss = nn.functional.cross_entropy(
                source_logits.detach(), torch.zeros(len(positions), dtype=torch.long, device=source_logits.device)
            )
            schedule.observe(float(source_loss))
            out.update({"train/loss_G": loss_g.detach(), "train/L_GANG": gang.detach()})
            out.update({"train/L_CONST": const.detach(), "train/L_TID": tid.detach(), "train/L_TV": tv.detach()})
        return out

    return train_step


def trait_evaluation(
    section: DtnParams,
    seed: int,
    data: DtnData,
    emoji: torch.Tensor,
    test_rows: pd.DataFrame,
    embed: Callable[[torch.Tensor], torch.Tensor],
    test_embeddings: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """Per trait, with the majority-class chance: the trait classifier trained on the real train avatars, its
    held-out accuracy (the ceiling), and its agreement on the emoji of the test photos with their identities' true
    traits. Beside them, what f itself carries of the trait (`f_avatars`, `f_photos`): a linear probe fitted on
    f of the train avatars, scored on f of the held-out avatars and on f of the test photos. g learns to draw a
    trait from avatars through f (L_TID), so a trait that f's avatar probe cannot read in the photos' embeddings has
    no path to the emoji."""
    bins = section.skin_tone_bins
    classes = class_counts(bins)
    train_images, train_rows = all_images([data.avatars_train])
    held_images, held_rows = all_images(data.avatars_held_out)
    truth = trait_classes(test_rows, bins).reset_index(drop=True)
    held_truth = trait_classes(held_rows, bins).reset_index(drop=True)
    probe = embedding_probe(
        embed(train_images).cpu(),
        trait_classes(train_rows, bins).reset_index(drop=True),
        {"f_avatars": (embed(held_images).cpu(), held_truth), "f_photos": (test_embeddings.cpu(), truth)},
        classes,
    )
    net = train_trait_net(
        to_model_input(train_images, TRAIT_SIZE), trait_classes(train_rows, bins), classes, section.trait_steps,
        section.trait_lr, seed,
    )  # fmt: skip
    ceiling = agreement(predict_traits(net, to_model_input(held_images, TRAIT_SIZE)), held_truth)
    small = nn.functional.interpolate(emoji, size=(TRAIT_SIZE, TRAIT_SIZE), mode="bilinear", antialias=True)
    kept = agreement(predict_traits(net, small), truth)
    table = {}
    for name in classes:
        row: dict[str, float] = {}
        if name in ceiling:
            row.update(ceiling=round(ceiling[name].accuracy, 4), ceiling_chance=round(ceiling[name].chance, 4))
        if name in kept:
            row.update(agreement=round(kept[name].accuracy, 4), chance=round(kept[name].chance, 4))
            row["photos"] = kept[name].count
        for probe_name, scores in probe.items():
            if name in scores:
                row[probe_name] = round(scores[name].accuracy, 4)
        table[name] = row
    return table


@torch.no_grad()
def evaluate_dtn(
    encoder: FaceEncoder, g: EmojiDecoder, section: DtnParams, seed: int, data: DtnData
) -> tuple[dict[str, Any], dict[str, Any], torch.Tensor]:
    """Test L_CONST and L_TID, retrieval ranks, nearest identity, emoji spread and trait agreement.

    Returns:
        (flat metrics, details, the test photos' emoji).
    """
    photos, rows = all_images([data.faces_test])
    source = embed_all(encoder, photos)
    emoji = generate(encoder, g, photos)
    probes = torch.cat([encode_emoji(encoder, chunk.to(source.device)) for chunk in emoji.split(128)])
    avatars, _ = all_images(data.avatars_held_out)
    avatar_images = to_model_input(avatars, section.emoji_size)
    avatar_emoji = generate(encoder, g, avatars)
    ranks = self_ranks(probes.cpu(), source.cpu())
    train_photos, train_rows = all_images([data.faces_train])
    centroids, names = identity_centroids(embed_all(encoder, train_photos).cpu(), list(train_rows["identity"]))
    identities = list(rows["identity"].astype(str))
    topk = identity_topk(probes.cpu(), identities, centroids, names, (1, 5))
    traits = trait_evaluation(section, seed, data, emoji, rows, lambda images: embed_all(encoder, images), source)
    compared = [t for t in traits.values() if "agreement" in t]
    above = sum(t["agreement"] >= t["chance"] + AGREEMENT_MARGIN for t in compared)
    f_above = sum(t.get("f_photos", 0.0) >= t["chance"] + AGREEMENT_MARGIN for t in compared)
    metrics = {
        "test_const": round(distance(source, probes, section.const_distance).item(), 4),
        "test_tid": round(distance(avatar_emoji, avatar_images, section.tid_distance).item(), 4),
        "median_rank": ranks.median,
        "mean_rank": round(ranks.mean, 2),
        "chance_rank": ranks.chance,
        "gallery": ranks.gallery,
        "identity_top1": round(topk[1], 4),
        "identity_top5": round(topk[5], 4),
        "chance_top1": round(chance_topk(1, len(names)), 4),
        "chance_top5": round(chance_topk(5, len(names)), 4),
        # per-pixel std over the emoji of different photos (0 = the same emoji for everyone) beside the avatars'
        "emoji_spread": round(emoji.std(0).mean().item(), 4),
        "avatar_spread": round(avatar_images.std(0).mean().item(), 4),
        "traits_compared": len(compared),
        "traits_above_chance_15pts": int(above),
        # the same count for f's own avatar-trained linear probe on the test photos' f: the traits f could pass on
        "f_traits_above_chance_15pts": int(f_above),
    }
    if compared:
        metrics["mean_trait_agreement"] = round(float(np.mean([t["agreement"] for t in compared])), 4)
        metrics["mean_trait_chance"] = round(float(np.mean([t["chance"] for t in compared])), 4)
    details = {"traits": traits, "ranks": ranks.ranks.tolist(), "identities": len(names)}
    return metrics, details, emoji


def train_dtn(params: Params, say: Callable[[str], None] = print) -> DtnResult:
    """Train the DTN per params.train and params.dtn on the shards and f; write dtn.pt, grids and curves.

    Raises:
        DtnError: for data that cannot train the DTN.
        FileNotFoundError: when f.pt is missing.
        pipeline.train.checkpoint.CheckpointError: for a corrupt or foreign checkpoint or f.pt.
    """
    train, section = params.train, params.dtn
    data = read_data(Path(params.pack.out_dir))
    with runtime(train.runtime, train.seed) as rt:
        if rt.distributed:
            raise DtnError("train_dtn runs in one process; launch it without torchrun")
        encoder = load_f(Path(params.pretrain_f.model), rt.device)
        encoder.net.fold_batch_norm()  # f stays frozen: its BatchNorms fold into the convs, 1.6x faster on the CPU
        encoder.requires_grad_(False)
        if rt.channels_last:
            encoder.to(memory_format=torch.channels_last)
        f_key = str(encoder.info.get("run", {}).get("key", ""))
        g, d, arch = build_models(section, encoder.net.embed_dim)
        schedule = Schedule(
            section.schedule, section.d_steps, section.g_steps, section.adaptive_low, section.adaptive_high
        )
        g_net, d_net = rt.prepare(g), rt.prepare(d)
        betas = (train.beta1, train.beta2)
        optimizers = {name: torch.optim.Adam(net.parameters(), train.lr, betas) for name, net in (("G", g), ("D", d))}
        trainer = Trainer(
            rt,
            train,
            {"G": g, "D": d, "schedule": schedule},
            optimizers,
            run_key(train, section, data.data_id, f_key),
            checkpoint=Path(section.checkpoint_dir) / CHECKPOINT_FILE,
            live_dir=Path(section.live_dir),
        )
        say(f"train_dtn: {trainer.start()}")
        # ---- f of every training photo and avatar, once: f is frozen and the inputs are not augmented
        started = time.perf_counter()
        cpu_started = time.process_time()
        face_images, _ = all_images([data.faces_train])
        face_embeddings = embed_all(encoder, face_images)
        position_of = {int(row): i for i, row in enumerate(data.faces_train.rows)}
        avatar_uint8, _ = all_images([data.avatars_train])
        avatar_images = to_model_input(avatar_uint8.to(rt.device), section.emoji_size)
        avatar_embeddings = embed_all(encoder, avatar_uint8)
        stream = ShardStream(data.faces_train, train.batch_size, shuffle=True, seed=train.seed, drop_last=True)
        if len(stream) == 0:
            raise DtnError(
                f"{len(data.faces_train)} training photos make no batch of {train.batch_size}; lower train.batch_size"
            )
        step = dtn_step(
            rt, encoder, (g_net, d_net), trainer, schedule, section,
            (face_embeddings, position_of), (avatar_images, avatar_embeddings),
        )  # fmt: skip
        grid_at = grid_positions(data.faces_test, section.grid_photos)
        grid_photos = data.faces_test.gather(grid_at)["image"]
        grid_names = list(data.faces_test.index["identity"].astype(str).to_numpy()[grid_at])
        grid_embeddings = embed_all(encoder, grid_photos)

        def evaluate() -> dict[str, float]:
            emoji = g(grid_embeddings)
            trainer.live.image(f"photo_emoji/{trainer.step:06d}.png", pair_grid(grid_photos, emoji, grid_names))
            const = distance(grid_embeddings, encode_emoji(encoder, emoji), section.const_distance)
            ranks = self_ranks(encode_emoji(encoder, emoji).cpu(), grid_embeddings.cpu())
            return {"eval/L_CONST": float(const), "eval/median_rank": ranks.median}

        fit = trainer.fit(stream, step, evaluate)
        g.eval()
        metrics, details, _ = evaluate_dtn(encoder, g, section, train.seed, data)
        final = pair_grid(grid_photos, g(grid_embeddings).cpu(), grid_names)
        trainer.live.image("photo_emoji_final.png", final)
        run = {
            **fit.record(rt.world_size, rt.device),
            "seconds": round(time.perf_counter() - started, 2),  # with f of every input before and the evaluation
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
        }
        info = {"params": resolved(section), "train": resolved(train), "f_key": f_key, "metrics": metrics}
        save_dtn(Path(section.model), g.state_dict(), d.state_dict(), arch, info | {"run": trainer.key.record()})
        say(f"train_dtn: {run['steps_run']} steps in {fit.seconds:.1f} s ({fit.cpu_seconds:.1f} s CPU)")
        trainer.close()
    return DtnResult(metrics, details, run)


def save_dtn(path: Path, g_state: dict, d_state: dict, arch: dict[str, Any], info: dict[str, Any]) -> None:
    """Write dtn.pt atomically: g and D weights, g's arguments, and info (params, f's run key, metrics)."""
    save_checkpoint(path, {"g": g_state, "d": d_state, "arch": dict(arch), "info": info}, DTN_FORMAT)


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[EmojiDecoder, dict[str, Any]]:
    """g from dtn.pt in eval mode, and the info saved beside it.

    Raises:
        FileNotFoundError: when there is no file (train it with `dvc repro train_dtn`).
        pipeline.train.checkpoint.CheckpointError: when the file is corrupt or not a dtn.pt.
    """
    payload = load_checkpoint(path, DTN_FORMAT, missing="train the DTN first with `dvc repro train_dtn`")
    g = EmojiDecoder(**payload["arch"])
    g.load_state_dict(payload["g"])
    return g.to(device).eval(), payload["info"]
