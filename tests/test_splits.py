"""Split assignment: near-duplicate clusters, stratified per-identity splits, seeded avatar splits, stable labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.crawl.face_store import hamming
from pipeline.dataset.splits import (
    SplitError,
    hash_splits,
    held_out_people,
    identity_labels,
    near_duplicate_clusters,
    split_faces,
    split_targets,
)


def _hash(rng: np.random.Generator) -> str:
    return rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def _flip(hex_hash: str, bits: list[int]) -> str:
    value = int(hex_hash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


def test_clusters_join_exact_and_near_duplicates_transitively() -> None:
    rng = np.random.default_rng(0)
    a = _hash(rng)
    b = _flip(a, [0, 1, 2, 3, 4])  # 5 bits from a
    c = _flip(b, [10, 11, 12, 13, 14])  # 5 from b, 10 from a: joined through b
    far = _hash(rng)
    shas = ["s0", "s1", "s2", "s3", "s0"]  # the last one has the same bytes as the first
    clusters = near_duplicate_clusters(shas, [a, b, c, far, _hash(rng)], max_distance=5)
    assert list(clusters) == [0, 0, 0, 3, 0]
    assert hamming(a, c) == 10
    assert list(near_duplicate_clusters(shas, [a, b, c, far, _hash(rng)], max_distance=4)) == [0, 1, 2, 3, 0]


def test_clusters_reject_malformed_hashes() -> None:
    with pytest.raises(SplitError, match="dvc repro align"):
        near_duplicate_clusters(["a"], ["abc"], 8)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 101])
def test_split_targets_add_up_and_give_small_splits_a_share(n: int) -> None:
    counts = split_targets(n, (0.8, 0.1, 0.1))
    assert sum(counts) == n
    if n >= 3:
        assert min(counts) >= 1
    assert counts[0] >= counts[1] >= 0


def test_hash_splits_are_seeded_and_independent_of_the_other_items() -> None:
    keys = [f"{i:064x}" for i in range(4000)]
    splits = hash_splits(keys, (0.8, 0.1, 0.1), seed=3)
    assert splits == hash_splits(keys, (0.8, 0.1, 0.1), seed=3)
    assert splits[:100] == hash_splits(keys[:100], (0.8, 0.1, 0.1), seed=3)
    assert splits != hash_splits(keys, (0.8, 0.1, 0.1), seed=4)
    shares = pd.Series(splits).value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.03


def test_labels_follow_sorted_names() -> None:
    labels = identity_labels(["Cy", "Ann", "Bob", "Ann"])
    assert labels == {"Ann": 0, "Bob": 1, "Cy": 2}
    # The documented rule: a new name renumbers only the names sorted after it.
    grown = identity_labels(["Cy", "Ann", "Bob", "Bea"])
    assert grown["Ann"] == 0 and grown["Bea"] == 1 and grown["Cy"] == 3


def _faces(rng: np.random.Generator, per_identity: dict[str, int]) -> pd.DataFrame:
    rows = []
    for name, count in per_identity.items():
        for i in range(count):
            rows.append({"identity": name, "folder": name.lower(), "source_sha256": f"{name}-{i}", "dhash": _hash(rng)})
    return pd.DataFrame(rows)


def test_split_faces_stratifies_each_identity_and_keeps_clusters_whole() -> None:
    rng = np.random.default_rng(1)
    frame = _faces(rng, {"Ann": 20, "Bob": 10, "Cy": 3})
    frame.loc[1, "dhash"] = _flip(frame.loc[0, "dhash"], [1, 2])  # Ann 0 ~ Ann 1
    frame.loc[25, "dhash"] = _flip(frame.loc[2, "dhash"], [7])  # Bob 5 ~ Ann 2: a cluster shared by two people
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)  # Ann lists the same bytes twice
    result = split_faces(frame, (0.6, 0.2, 0.2), seed=0, max_distance=4, min_faces=5)
    assert result.dropped == {"Cy": "3 aligned faces, fewer than min_faces_per_identity=5"}
    assert result.duplicate_rows == 1 and result.shared_clusters == 1
    kept = result.frame
    assert set(kept["identity"]) == {"Ann", "Bob"} and result.labels == {"Ann": 0, "Bob": 1}
    counts = kept.groupby(["identity", "split"]).size().unstack(fill_value=0)
    assert counts.loc["Ann"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert counts.loc["Bob"].to_dict() == {"test": 2, "train": 6, "val": 2}
    assert kept.groupby("cluster")["split"].nunique().max() == 1
    by_sha = kept.set_index("source_sha256")["split"]
    assert by_sha["Ann-0"] == by_sha["Ann-1"] and by_sha["Ann-2"] == by_sha["Bob-5"]
    again = split_faces(frame, (0.6, 0.2, 0.2), seed=0, max_distance=4, min_faces=5)
    assert list(again.frame["split"]) == list(kept["split"])
    other = split_faces(frame, (0.6, 0.2, 0.2), seed=1, max_distance=4, min_faces=5)
    assert list(other.frame["split"]) != list(kept["split"])


def test_split_faces_refuses_to_merge_identities_sharing_a_folder() -> None:
    frame = _faces(np.random.default_rng(2), {"Ann": 2, "ANN": 2})
    with pytest.raises(SplitError, match="share the folder"):
        split_faces(frame, (0.8, 0.1, 0.1), seed=0, max_distance=8, min_faces=1)


def test_held_out_people_are_whole_identities_no_trained_split_holds() -> None:
    rng = np.random.default_rng(3)
    people = {f"P{i:02d}": 12 for i in range(20)}
    frame = _faces(rng, people)
    frame.loc[12 * 7, "dhash"] = _flip(frame.loc[0, "dhash"], [3])  # P07's first photo ~ P00's first
    result = split_faces(frame, (0.8, 0.1, 0.1), seed=0, max_distance=4, min_faces=5, people=(0.2, 0.1))
    held = result.held_out
    assert sorted(held.values()).count("people_val") == 4 and sorted(held.values()).count("people_test") == 2
    kept = result.frame
    trained = kept[kept["split"].isin(["train", "val", "test"])]
    assert not set(trained["identity"]) & set(held), "a held-out person has photos in a trained split"
    assert (
        set(result.labels) == set(people) - set(held) and (kept.loc[kept["identity"].isin(held), "label"] == -1).all()
    )
    for name, split in held.items():
        assert set(kept.loc[kept["identity"] == name, "split"]) == {split}
        assert (kept["identity"] == name).sum() == 12, "a held-out person keeps every photo"
    # no photo of a held-out person is also in training under another name (same photo, near-duplicate dHash)
    assert not set(trained["cluster"]) & set(kept.loc[kept["identity"].isin(held), "cluster"])
    assert result.shared_with_held_out == (1 if ("P00" in held) != ("P07" in held) else 0)
    # seeded, and stable as people are added: the first 20 keep their verdicts when 10 more are crawled
    assert held_out_people(list(people), (0.2, 0.1), 0) == held
    assert held_out_people(list(people), (0.2, 0.1), 1) != held
    more = held_out_people([*people, *(f"Q{i}" for i in range(10))], (0.2, 0.1), 0)
    assert sum(more.get(name) == split for name, split in held.items()) >= 4


def test_held_out_people_leave_two_identities_to_train_on() -> None:
    assert len(held_out_people(["a", "b", "c"], (0.5, 0.4), 0)) == 1
    assert held_out_people(["a", "b"], (0.3, 0.3), 0) == {}
