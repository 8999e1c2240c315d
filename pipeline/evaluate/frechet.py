"""Fréchet distance between feature sets (FD in f's space, FID in Inception's), its floor, and sample diversity."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# A feature extractor: uint8 images (B, H, W, 3) -> float features (B, D).
Embed = Callable[[torch.Tensor], torch.Tensor]


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64.

    Raises:
        ValueError: for fewer than two samples (no covariance).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (round-off negatives clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet (2-Wasserstein) distance of two Gaussians.

    tr (S1 S2)^(1/2) is computed as the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2), which has the same spectrum; unlike scipy's sqrtm of the non-symmetric product it has no
    complex round-off to discard, and it is exact for singular covariances (fewer samples than dimensions).
    """
    root = _psd_sqrt(sigma1)
    inner = np.linalg.eigvalsh((root @ sigma2 @ root + (root @ sigma2 @ root).T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(distance, 0.0)  # round-off can leave -1e-12 for identical sets


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def mean_pairwise_distance(features: np.ndarray) -> float:
    """The mean Euclidean distance over all pairs i < j of a feature set (N, D): how spread the samples are.

    A generator that collapses onto a few modes gives far less than real data in the same space.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    n = len(x)
    if n < 2:
        raise ValueError(f"need at least two samples for pairwise distances, got {n}")
    distances = torch.cdist(x, x)  # (N, N)
    return float(distances.triu(diagonal=1).sum() / (n * (n - 1) / 2))


def split_halves(groups: np.ndarray, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of two disjoint halves of a sample set, for the real-vs-real floor.

    Samples of one group (a photo and its mirror image) stay in one half; within each stratum (an identity) the
    groups alternate between halves in sorted order, so both halves hold every identity about equally.

    Args:
        groups: group id of every sample (N,).
        strata: stratum of every sample (N,); constant within a group.

    Returns:
        positions of half A and half B.
    """
    groups, strata = np.asarray(groups), np.asarray(strata)
    side = np.zeros(len(groups), dtype=bool)
    turn = 0
    for stratum in np.unique(strata):
        for group in np.unique(groups[strata == stratum]):
            side[groups == group] = turn % 2 == 1
            turn += 1
    return np.flatnonzero(~side), np.flatnonzero(side)


def embed_all(embed: Embed, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Features (N, D) of uint8 images (N, H, W, 3), in batches, without gradients."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunks.append(embed(images[start : start + batch_size]).float().cpu())
    return torch.cat(chunks).numpy()


# ---- standard FID: the TorchScript Inception-v3 of StyleGAN2-ADA / clean-fid --------------------------------------


class InceptionError(ValueError):
    """The Inception file given for FID cannot be used; the message names it and what to do."""


def load_inception(path: str | Path, device: torch.device | str = "cpu") -> Embed:
    """The FID feature extractor from a TorchScript Inception-v3 file (`inception-2015-12-05.pt`, as StyleGAN2-ADA
    and clean-fid distribute it), as uint8 images (B, H, W, 3) -> pool3 features (B, 2048).

    The network takes float images (B, 3, H, W) with values 0..255 and `return_features=True`, and resizes them to
    299 x 299 itself, as those metric codes call it. Nothing is downloaded: the file must be there.

    Raises:
        InceptionError: for a missing file, one that is not TorchScript, or a network that does not answer
            `(images, return_features=True)` with (B, D) features.
    """
    path = Path(path)
    if not path.is_file():
        raise InceptionError(
            f"dcgan.inception={str(path)!r} does not exist; give the path of a TorchScript Inception-v3 "
            "(inception-2015-12-05.pt) or null to skip FID"
        )
    try:
        with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; the FID network ships as one
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InceptionError(f"dcgan.inception: {path} is not a TorchScript model ({reason})") from None

    def embed(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).permute(0, 3, 1, 2).float()  # (B, 3, H, W), 0..255
        try:
            features = network(x, return_features=True)
        except RuntimeError as exc:
            raise InceptionError(
                f"dcgan.inception: {path} does not take (images, return_features=True) as the FID Inception does "
                f"({str(exc).strip().splitlines()[0][:200]})"
            ) from None
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise InceptionError(
                f"dcgan.inception: {path} returned features of shape {tuple(features.shape)}, expected (B, D)"
            )
        return features

    return embed
