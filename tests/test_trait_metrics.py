"""Balanced accuracy: the trait metric that rare classes (hats, glasses) cannot game by the majority answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.traits import balanced_accuracy, balanced_table


def test_balanced_accuracy_by_hand() -> None:
    truth = np.array([0, 0, 0, 0, 1, 1, -1])  # -1: no ground truth, left out
    predicted = np.array([0, 0, 0, 1, 1, 0, 1])
    score = balanced_accuracy(predicted, truth)
    assert score is not None
    assert score.accuracy == pytest.approx((3 / 4 + 1 / 2) / 2)  # 0.625, while plain accuracy is 4/6
    assert (score.chance, score.classes, score.count) == (0.5, 2, 6)
    assert score.above_chance == pytest.approx(0.125)


def test_the_majority_answer_scores_chance_however_rare_the_trait() -> None:
    truth = np.array([0] * 95 + [1] * 5)  # 5 % wear a hat
    always_none = np.zeros(100, dtype=int)
    score = balanced_accuracy(always_none, truth)
    assert score is not None and score.accuracy == 0.5 == score.chance  # plain accuracy would say 0.95
    three = balanced_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]))
    assert (
        three is not None
        and three.accuracy == pytest.approx((1 / 2 + 1 + 1) / 3)
        and three.chance == pytest.approx(1 / 3)
    )


def test_chance_counts_only_the_classes_present_and_unknown_truth_gives_none() -> None:
    score = balanced_accuracy(np.array([3, 3, 5]), np.array([3, 3, 7]))  # classes 3 and 7 of a 12-class trait
    assert score is not None and score.classes == 2 and score.accuracy == 0.5
    assert balanced_accuracy(np.array([1, 2]), np.array([-1, -1])) is None
    table = balanced_table(
        pd.DataFrame({"hat": [0, 1, 1], "gender": [1, 0, 0]}), pd.DataFrame({"hat": [0, 1, 0], "gender": [-1, -1, -1]})
    )
    assert set(table) == {"hat"} and table["hat"].accuracy == pytest.approx(0.75)
