"""A DTN's data and how good it is: L_CONST and L_TID on held-out data, retrieval ranks, nearest identity, traits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from pipeline.core.params import DtnParams
from pipeline.core.runner import StageError
from pipeline.dataset.loader import ShardDataset, all_images, to_model_input
from pipeline.evaluate.classify import chance_topk
from pipeline.evaluate.retrieval import identity_centroids, identity_topk, self_ranks
from pipeline.evaluate.traits import (
    balanced_table,
    class_counts,
    embedding_probe,
    predict_traits,
    train_trait_net,
    trait_classes,
)
from pipeline.models.dtn import EmojiDecoder, distance, to_encoder_input
from pipeline.models.face_encoder import FaceEncoder

TRAIT_SIZE = 32  # the trait classifier sees avatars and emoji at this side: the traits are large, the CPU is small
TRAIT_MARGIN = 0.25  # a trait counts as read when its balanced accuracy is at least its chance + this


@dataclass(frozen=True)
class DtnData:
    """The source photos (face shards) and target avatars (avatar shards) a DTN run reads."""

    faces_train: ShardDataset
    faces_test: ShardDataset
    avatars_train: ShardDataset
    avatars_held_out: list[ShardDataset]  # val and test: the trait classifier's ceiling and the test L_TID
    data_id: str
    people_test: ShardDataset | None = None  # held-out people (no stage trains on them): the trait verdicts


def _shards_id(root: Path) -> str:
    index = pd.read_parquet(root / "index.parquet", columns=["shard", "shard_sha256"]).drop_duplicates("shard")
    return "".join(f"{row.shard}:{row.shard_sha256}\n" for row in index.sort_values("shard").itertuples())


def read_data(shards: Path) -> DtnData:
    """Open the face and avatar splits under `shards` (checksums verified).

    Raises:
        StageError: when a split the DTN needs is empty.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    faces, avatars = shards / "faces", shards / "avatars"
    data = DtnData(
        ShardDataset(faces, "train"),
        ShardDataset(faces, "test"),
        ShardDataset(avatars, "train"),
        [ShardDataset(avatars, "val"), ShardDataset(avatars, "test")],
        hashlib.sha256((_shards_id(faces) + _shards_id(avatars)).encode()).hexdigest()[:16],
        ShardDataset(faces, "people_test"),
    )
    for name, split in (("faces train", data.faces_train), ("faces test", data.faces_test)):
        if len(split) == 0:
            raise StageError(f"the {name} split under {shards} is empty; crawl more photos or raise pack.test_fraction")
    if len(data.avatars_train) == 0 or sum(len(s) for s in data.avatars_held_out) == 0:
        raise StageError(f"the avatar splits under {shards} are empty; raise crawl.avatars.count")
    return data


@torch.no_grad()
def embed_all(encoder: FaceEncoder, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """f of uint8 aligned images, (N, D) on f's device."""
    return torch.cat([encoder.embed(chunk) for chunk in images.split(batch)])


def encode_emoji(encoder: FaceEncoder, emoji: torch.Tensor) -> torch.Tensor:
    """f(G(x)): g's output resized to f's input side, then f (gradients flow through f into g)."""
    return encoder.net.embed(to_encoder_input(emoji, encoder.input_size))


@torch.no_grad()
def generate(encoder: FaceEncoder, g: EmojiDecoder, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """G(x) = g(f(x)) of uint8 aligned faces, (N, 3, S, S) in [-1, 1] on the CPU."""
    was_training = g.training
    g.eval()
    out = torch.cat([g(encoder.embed(chunk)).cpu() for chunk in images.split(batch)])
    g.train(was_training)
    return out


def trait_evaluation(
    section: DtnParams,
    seed: int,
    data: DtnData,
    emoji: torch.Tensor,
    people_rows: pd.DataFrame,
    embed: Callable[[torch.Tensor], torch.Tensor],
    people_embeddings: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """Per trait, balanced accuracy with its chance (1 / classes present): the trait classifier trained on the real
    train avatars, on the held-out avatars (`ceiling`) and on the emoji of the held-out people's photos against their
    true traits (`balanced_accuracy`). Beside them, what f itself carries of the trait (`f_avatars`, `f_photos`): a
    linear probe fitted on f of the train avatars, scored on f of the held-out avatars and of the people's photos.
    g learns to draw a trait from avatars through f (L_TID), so a trait that f's avatar probe cannot read in the
    photos' embeddings has no path to the emoji."""
    bins = section.skin_tone_bins
    classes = class_counts(bins)
    train_images, train_rows = all_images([data.avatars_train])
    held_images, held_rows = all_images(data.avatars_held_out)
    truth = trait_classes(people_rows, bins).reset_index(drop=True)
    held_truth = trait_classes(held_rows, bins).reset_index(drop=True)
    probe = embedding_probe(
        embed(train_images).cpu(),
        trait_classes(train_rows, bins).reset_index(drop=True),
        {"f_avatars": (embed(held_images).cpu(), held_truth), "f_photos": (people_embeddings.cpu(), truth)},
        classes,
    )
    net = train_trait_net(
        to_model_input(train_images, TRAIT_SIZE), trait_classes(train_rows, bins), classes, section.trait_steps,
        section.trait_lr, seed,
    )  # fmt: skip
    ceiling = balanced_table(predict_traits(net, to_model_input(held_images, TRAIT_SIZE)), held_truth)
    small = nn.functional.interpolate(emoji, size=(TRAIT_SIZE, TRAIT_SIZE), mode="bilinear", antialias=True)
    kept = balanced_table(predict_traits(net, small), truth) if len(emoji) else {}
    table = {}
    for name in classes:
        row: dict[str, float] = {}
        if name in ceiling:
            row.update(ceiling=round(ceiling[name].accuracy, 4), ceiling_chance=round(ceiling[name].chance, 4))
        if name in kept:
            row.update(balanced_accuracy=round(kept[name].accuracy, 4), chance=round(kept[name].chance, 4))
            row["photos"] = kept[name].count
        for probe_name, scores in probe.items():
            if name in scores:
                row[probe_name] = round(scores[name].accuracy, 4)
        table[name] = row
    return table


@torch.no_grad()
def evaluate_dtn(
    encoder: FaceEncoder, g: EmojiDecoder, section: DtnParams, seed: int, data: DtnData
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test L_CONST and L_TID (beside the mean avatar's), retrieval ranks, nearest identity, emoji spread, and the
    traits of the held-out people's emoji (balanced accuracy).

    Returns:
        (flat metrics, details).
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
    people_rows, people_embeddings, people_emoji = rows[:0], source[:0], emoji[:0]  # no held-out people: no verdicts
    if data.people_test is not None and len(data.people_test):
        people, people_rows = all_images([data.people_test])
        people_embeddings, people_emoji = embed_all(encoder, people), generate(encoder, g, people)
    traits = trait_evaluation(
        section, seed, data, people_emoji, people_rows, lambda images: embed_all(encoder, images), people_embeddings
    )
    compared = [t for t in traits.values() if "balanced_accuracy" in t]
    read = sum(t["balanced_accuracy"] >= t["chance"] + TRAIT_MARGIN for t in compared)
    f_read = sum(t.get("f_photos", 0.0) >= t["chance"] + TRAIT_MARGIN for t in compared)
    train_avatars, _ = all_images([data.avatars_train])
    mean_avatar = to_model_input(train_avatars, section.emoji_size).mean(0, keepdim=True).expand_as(avatar_images)
    metrics = {
        "test_const": round(distance(source, probes, section.const_distance).item(), 4),
        "test_tid": round(distance(avatar_emoji, avatar_images, section.tid_distance).item(), 4),
        # L_TID of drawing the train avatars' mean image for every held-out avatar: g must beat it to draw avatars
        "tid_mean_avatar": round(distance(mean_avatar, avatar_images, section.tid_distance).item(), 4),
        "median_rank": ranks.median,
        "chance_rank": ranks.chance,
        "identity_top1": round(topk[1], 4),
        "chance_top1": round(chance_topk(1, len(names)), 4),
        # per-pixel std over the emoji of different photos (0 = the same emoji for everyone) beside the avatars'
        "emoji_spread": round(emoji.std(0).mean().item(), 4),
        "avatar_spread": round(avatar_images.std(0).mean().item(), 4),
        "traits": {
            name: {"balanced_accuracy": t["balanced_accuracy"], "chance": t["chance"]}
            for name, t in traits.items()
            if "balanced_accuracy" in t
        },
        "traits_read": int(read),
        "traits_compared": len(compared),
    }
    details: dict[str, Any] = {
        "gallery": ranks.gallery,
        "mean_rank": round(ranks.mean, 2),
        "identity_top5": round(topk[5], 4),
        "chance_top5": round(chance_topk(5, len(names)), 4),
        "trait_margin": TRAIT_MARGIN,
        "people": int(people_rows["identity"].nunique()) if len(people_rows) else 0,
        # the same count for f's own avatar-trained linear probe on the people's f: the traits f could pass on
        "f_traits_read": int(f_read),
    }
    details |= {"traits": traits, "ranks": ranks.ranks.tolist(), "identities": len(names)}
    return metrics, details
