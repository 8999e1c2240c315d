"""How good a face generator is: fd_f beside its real-vs-real floor in f's space, the diversity guard, optional FID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.params import DcganParams, TrainParams
from pipeline.core.runner import StageError
from pipeline.dataset.loader import ShardDataset, to_model_input, to_uint8_images
from pipeline.evaluate.frechet import (
    Embed,
    embed_all,
    frechet_distance,
    load_inception,
    mean_pairwise_distance,
    split_halves,
)
from pipeline.models.dcgan import IMAGE_SIZE, Generator, fixed_noise, sample
from pipeline.models.face_encoder import load_f


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
        raise StageError(f"the {'+'.join(splits)} split(s) of {data_root} hold no faces; change dcgan.real_splits")
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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """fd_f beside its floor, the diversity guard, and FID when asked: (metrics/dcgan.json, its details).

    Raises:
        StageError: when `dcgan.real_splits` hold too few faces for the floor.
    """
    real, photo, identity = real_views(data_root, section.real_splits, section.eval_flip)
    a, b = split_halves(photo, identity)
    n = min(len(a), len(b))
    if n < 2:
        raise StageError(
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
        "diversity_ratio": round(diversity_gen / diversity_real, 3),
    }
    details = {
        "diversity_gen": round(diversity_gen, 4),
        "diversity_real": round(diversity_real, 4),
        "samples": int(2 * n),  # generated and real, each; every FD compares n = samples / 2 with n
        "real_faces": len(np.unique(photo[used])),
    }
    guard = memorisation(encoder.embed, in_f["fake_features"], data_root)
    if guard:
        metrics["copy_share"], metrics["copy_share_chance"] = guard.pop("copy_share"), guard.pop("chance")
        details["memorisation"] = guard
    if section.inception is not None:
        in_inception = frechet_report(load_inception(section.inception, device), real, halves, fake)
        metrics["fid"] = round(in_inception["fd"], 3)
        metrics["fid_floor"] = round(in_inception["floor"], 3)
    return metrics, details


COPY_QUANTILE = 0.05  # a generated face nearer a training face than 95 % of the test faces are counts as a copy


def memorisation(embed: Embed, fake_features: np.ndarray, data_root: Path) -> dict[str, float]:
    """Does G copy its training faces? Each generated face's distance in f's space to its nearest training face
    (and mirror), against the same for the test faces, which G never saw.

    A generator of new faces sits as far from the training set as unseen real faces do: `copy_share`, the share of
    generated faces nearer a training face than the test faces' 5th percentile, is then about 0.05 (its chance);
    a generator that reproduces training faces shows far more.

    Returns:
        copy_share, its chance, the two median nearest-neighbour distances and their ratio; {} when the train or
        test split holds no faces.
    """
    if not len(ShardDataset(data_root, "train")) or not len(ShardDataset(data_root, "test")):
        return {}
    train = torch.as_tensor(embed_all(embed, real_views(data_root, ["train"], True)[0]))
    test = torch.as_tensor(embed_all(embed, real_views(data_root, ["test"], False)[0]))
    nearest_test = torch.cdist(test, train).min(dim=1).values  # (N_test,)
    nearest_gen = torch.cdist(torch.as_tensor(fake_features), train).min(dim=1).values  # (N_gen,)
    threshold = torch.quantile(nearest_test, COPY_QUANTILE)
    median_gen, median_test = float(nearest_gen.median()), float(nearest_test.median())
    return {
        "copy_share": round(float((nearest_gen < threshold).float().mean()), 4),
        "chance": COPY_QUANTILE,
        "nearest_train_generated_median": round(median_gen, 4),
        "nearest_train_test_median": round(median_test, 4),
        "nearest_ratio": round(median_gen / median_test, 3) if median_test > 0 else None,
    }
