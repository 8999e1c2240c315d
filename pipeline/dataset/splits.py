"""Leak-free train/val/test splits: near-duplicate clusters, per-identity stratified assignment, stable labels."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")  # every identity's photos, split by photo (f and CAM classify these people)
# Whole identities that no stage trains on: per-person verdicts (traits, avatar parameters) are measured on them.
PEOPLE_SPLITS = ("people_val", "people_test")
ALL_SPLITS = SPLITS + PEOPLE_SPLITS
_HEX_DIGITS = 64  # a 256-bit dHash as written by pipeline.crawl.face_store.dhash256


class SplitError(ValueError):
    """The face manifest cannot be split as asked (bad hashes, identities that would merge)."""


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self.size[root_a] < self.size[root_b]:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        self.size[root_a] += self.size[root_b]


def _hash_words(dhashes: Sequence[str]) -> np.ndarray:
    """Hex dHashes as (n, 4) uint64 words, so a Hamming distance is four XORs and popcounts."""
    bad = [h for h in dhashes if not isinstance(h, str) or len(h) != _HEX_DIGITS]
    if bad:
        raise SplitError(f"dhash {bad[0]!r} is not {_HEX_DIGITS} hex digits; re-run `dvc repro align`")
    raw = b"".join(bytes.fromhex(h) for h in dhashes)
    return np.frombuffer(raw, dtype=">u8").reshape(len(dhashes), _HEX_DIGITS // 16).astype(np.uint64)


def near_duplicate_clusters(
    sha256s: Sequence[str], dhashes: Sequence[str], max_distance: int, block: int = 256
) -> np.ndarray:
    """Cluster id per item: items with equal sha256 or dHash within `max_distance` bits are joined transitively.

    Ids are the smallest member's position, so they do not depend on the order unions happen in. The all-pairs
    comparison runs in row blocks of the upper triangle (n = 9 000 takes well under a second).
    """
    n = len(sha256s)
    sets = UnionFind(n)
    first: dict[str, int] = {}
    for i, sha in enumerate(sha256s):
        sets.union(first.setdefault(sha, i), i)
    words = _hash_words(dhashes)
    for start in range(0, n, block):
        rows = words[start : start + block]
        # (b, n - start) distances to every later item; the lower triangle was seen by earlier blocks
        distance = np.bitwise_count(rows[:, None, :] ^ words[None, start:, :]).sum(axis=2)
        for i, j in zip(*np.nonzero(distance <= max_distance), strict=True):
            if start + i < start + j:
                sets.union(int(start + i), int(start + j))
    roots = np.array([sets.find(i) for i in range(n)], dtype=np.int64)
    smallest = {}
    for i, root in enumerate(roots):
        smallest.setdefault(int(root), i)
    return np.array([smallest[int(r)] for r in roots], dtype=np.int64)


def split_targets(n: int, fractions: Sequence[float]) -> list[int]:
    """Whole counts per split that add up to `n` (largest remainder); a split with a share gets one when it can."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda s: (-(exact[s] - counts[s]), s))
    for s in by_remainder[: n - sum(counts)]:
        counts[s] += 1
    for s, share in enumerate(fractions):
        donor = max(range(len(counts)), key=lambda d: (counts[d], -d))
        if share > 0 and counts[s] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[s] += 1
    return counts


def seeded_key(seed: int, key: str) -> str:
    """A seeded pseudo-random but reproducible sort key for `key`."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def hash_splits(keys: Sequence[str], fractions: Sequence[float], seed: int) -> list[str]:
    """Split by a seeded hash of each key: u = first 64 bits / 2**64 against the cumulative fractions.

    Used for avatars, which have no identity; equal keys (identical bytes) always land in the same split, and an
    item's split never depends on which other items are present.
    """
    bounds = np.cumsum(fractions)
    out = []
    for key in keys:
        u = int(seeded_key(seed, key)[:16], 16) / 2**64
        out.append(SPLITS[min(int(np.searchsorted(bounds, u, side="right")), len(SPLITS) - 1)])
    return out


def identity_labels(identities: Sequence[str]) -> dict[str, int]:
    """Labels 0..K-1 in sorted order of the identity names (Python string order): same names, same labels."""
    return {name: label for label, name in enumerate(sorted(set(identities)))}


@dataclass
class FaceSplit:
    """The outcome of `split_faces`.

    Attributes:
        frame: kept rows with `cluster`, `split` and `label` columns, in input order.
        labels: identity -> label.
        dropped: identity -> why it was dropped.
        duplicate_rows: rows removed because the same identity listed the same bytes twice.
        shared_clusters: near-duplicate clusters that hold photos of more than one identity (kept, one split).
    """

    frame: pd.DataFrame
    labels: dict[str, int]
    dropped: dict[str, str] = field(default_factory=dict)
    duplicate_rows: int = 0
    shared_clusters: int = 0
    held_out: dict[str, str] = field(default_factory=dict)  # identity -> people_val | people_test
    shared_with_held_out: int = 0  # rows of trained identities dropped: the same photo as a held-out person's


def _check_folders(frame: pd.DataFrame) -> None:
    """Two identities that share a folder name would be one class on disk; refuse instead of merging them."""
    if "folder" not in frame.columns:
        return
    per_folder = frame.groupby("folder")["identity"].unique()
    for folder, names in per_folder.items():
        if len(names) > 1:
            raise SplitError(f"identities {sorted(names)} share the folder {folder!r}; rename one and re-crawl")


def held_out_people(identities: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Whole identities set aside as (people_val, people_test), by a seeded hash of each name.

    The counts are the fractions of the identities (largest remainder; a non-zero share gets at least one person
    while two are left to train on). An identity's place in the seeded order does not depend on the other names, so
    adding people to a crawl moves few of the earlier ones.
    """
    names = sorted(set(identities), key=lambda name: (seeded_key(seed, f"people|{name}"), name))
    counts = split_targets(len(names), [1.0 - sum(fractions), *fractions])[1:]
    while sum(counts) > max(len(names) - 2, 0):  # keep two people for the identity classifiers
        counts[counts.index(max(counts))] -= 1
    out: dict[str, str] = {}
    for split, count in zip(PEOPLE_SPLITS, counts, strict=True):
        for name in names[len(out) : len(out) + count]:
            out[name] = split
    return out


def split_faces(
    frame: pd.DataFrame,
    fractions: Sequence[float],
    seed: int,
    max_distance: int,
    min_faces: int,
    people: Sequence[float] = (0.0, 0.0),
) -> FaceSplit:
    """Assign every aligned face to a split: whole held-out people first, then per identity, stratified by the
    fractions, whole clusters at a time.

    Args:
        frame: rows with `identity`, `source_sha256` and `dhash` (only status "ok" rows should be passed).
        fractions: (train, val, test) shares of each trained identity's photos, summing to 1.
        seed: decides which clusters of an identity go where, and which people are held out.
        max_distance: dHash bits within which two photos are the same photo (any identity).
        min_faces: identities with fewer distinct faces are dropped and reported.
        people: (people_val, people_test) shares of the kept identities set aside whole; their label is -1.
    """
    _check_folders(frame)
    kept = frame.drop_duplicates(["identity", "source_sha256"], keep="first")
    duplicate_rows = len(frame) - len(kept)
    sizes = kept.groupby("identity").size()
    dropped = {
        str(name): f"{count} aligned faces, fewer than min_faces_per_identity={min_faces}"
        for name, count in sizes.items()
        if count < min_faces
    }
    kept = kept[~kept["identity"].isin(dropped)].reset_index(drop=True)
    clusters = near_duplicate_clusters(list(kept["source_sha256"]), list(kept["dhash"]), max_distance)
    kept = kept.assign(cluster=clusters)
    held = held_out_people(list(kept["identity"]), people, seed) if any(people) else {}
    in_held = kept["identity"].isin(held)
    # a photo that is also a held-out person's photo (same bytes or near-duplicate) leaves the trained side
    leaking = ~in_held & kept["cluster"].isin(set(kept.loc[in_held, "cluster"]))
    shared_with_held_out = int(leaking.sum())
    held_rows, kept = kept[in_held].copy(), kept[~in_held & ~leaking].copy()
    cluster_split: dict[int, int] = {}
    for identity, group in kept.groupby("identity", sort=True):
        targets = split_targets(len(group), fractions)
        counts = [0] * len(SPLITS)
        members = group.groupby("cluster").size()
        for cluster, size in members.items():  # clusters shared with an earlier identity are already placed
            if cluster in cluster_split:
                counts[cluster_split[cluster]] += int(size)
        # Big clusters first so they do not overshoot a small split at the end; the seed orders equal sizes.
        todo = [c for c in members.index if c not in cluster_split]
        todo.sort(key=lambda c: (-int(members[c]), seeded_key(seed, f"{identity}|{c}")))
        for cluster in todo:
            best = max(range(len(SPLITS)), key=lambda s: (targets[s] - counts[s], -s))
            cluster_split[cluster] = best
            counts[best] += int(members[cluster])
    labels = identity_labels(list(kept["identity"]))
    kept["split"] = [SPLITS[cluster_split[c]] for c in kept["cluster"]]
    kept["label"] = kept["identity"].map(labels).astype("int64")
    held_rows = held_rows.assign(split=held_rows["identity"].map(held), label=-1)
    frame_out = pd.concat([kept, held_rows]).sort_index() if len(held_rows) else kept
    frame_out = frame_out.reset_index(drop=True)
    shared = int((frame_out.groupby("cluster")["identity"].nunique() > 1).sum())
    return FaceSplit(frame_out, labels, dropped, duplicate_rows, shared, held, shared_with_held_out)
