"""Fréchet distance against its closed form, the floor's halves, diversity, and the FID path with a stand-in net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.evaluate.frechet import (
    InceptionError,
    embed_all,
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
    load_inception,
    mean_pairwise_distance,
    split_halves,
)


def test_identical_sets_are_at_distance_zero() -> None:
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x[:50], x[:50]) == pytest.approx(0.0, abs=1e-9)  # singular covariance (50 < 16 + 35)


def test_exact_statistics_give_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)  # standard deviations of diagonal Gaussians
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())  # W2 of diagonal Gaussians
    assert frechet_from_stats(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)
    # a full covariance rotated the same way in both: the distance is rotation invariant
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = frechet_from_stats(q @ mu1, q @ np.diag(s1**2) @ q.T, q @ mu2, q @ np.diag(s2**2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_samples_of_shifted_gaussians_match_the_closed_form(shift: float) -> None:
    rng = np.random.default_rng(2)
    dim, n = 4, 40_000
    cov = np.diag([1.0, 0.5, 2.0, 1.5])
    a = rng.multivariate_normal(np.zeros(dim), cov, size=n)
    b = rng.multivariate_normal(np.full(dim, shift), cov, size=n)
    # same covariance: the distance is ||shift||^2; the sampling error of n = 40 000 is far below 5 %
    assert frechet_distance(a, b) == pytest.approx(dim * shift**2, rel=0.05, abs=0.01)
    wider = rng.multivariate_normal(np.zeros(dim), 4 * cov, size=n)  # std x2: trace term sum(s^2) = 5
    assert frechet_distance(a, wider) == pytest.approx(float(np.trace(cov)), rel=0.05)


def test_stats_need_two_samples() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 3)))


def test_diversity_is_the_mean_pairwise_distance_and_drops_under_collapse() -> None:
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert mean_pairwise_distance(points) == pytest.approx((3 + 4 + 5) / 3)
    rng = np.random.default_rng(3)
    spread = rng.normal(size=(200, 8))
    one_mode = np.repeat(spread[:1], 200, axis=0) + rng.normal(scale=0.01, size=(200, 8))
    assert mean_pairwise_distance(one_mode) < 0.05 * mean_pairwise_distance(spread)


def test_halves_are_disjoint_keep_groups_together_and_balance_strata() -> None:
    photo = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])  # six photos and their mirror images
    identity = np.array([0, 0, 0, 0, 1, 1] * 2)
    a, b = split_halves(photo, identity)
    assert set(a).isdisjoint(b) and len(a) + len(b) == 12
    assert set(photo[a]).isdisjoint(photo[b])  # a photo and its mirror never straddle the halves
    assert sorted(identity[a].tolist()) == sorted(identity[b].tolist()) == [0, 0, 0, 0, 1, 1]


class StandIn(nn.Module):
    """A tiny network with the TorchScript Inception's call: (B, 3, H, W) in 0..255, return_features -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = self.conv(x / 255).mean(dim=(2, 3))
        return features if return_features else features.softmax(1)


def test_fid_path_with_a_torchscript_stand_in(tmp_path: Path) -> None:
    path = tmp_path / "inception.pt"
    torch.jit.script(StandIn()).save(str(path))
    embed = load_inception(path)
    rng = np.random.default_rng(4)
    dark = torch.from_numpy(rng.integers(0, 100, (40, 16, 16, 3), dtype=np.uint8))
    bright = torch.from_numpy(rng.integers(150, 256, (40, 16, 16, 3), dtype=np.uint8))
    features = embed_all(embed, dark, batch_size=16)
    assert features.shape == (40, 8)
    assert frechet_distance(features, embed_all(embed, dark)) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(features, embed_all(embed, bright)) > 10 * frechet_distance(features[:20], features[20:])


def test_fid_path_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(InceptionError, match="does not exist"):
        load_inception(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InceptionError, match="not a TorchScript model"):
        load_inception(tmp_path / "junk.pt")
    plain = torch.jit.script(nn.Conv2d(3, 4, 3))  # no return_features argument
    plain.save(str(tmp_path / "plain.pt"))
    with pytest.raises(InceptionError, match="return_features"):
        load_inception(tmp_path / "plain.pt")(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
