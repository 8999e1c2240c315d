"""Names of synthetic sandbox people: a stream of distinct names whose folders differ too."""

from __future__ import annotations

import pytest

from pipeline.core.storage import safe_name
from pipeline.sandbox.people import CAPACITY, ROSTER, synthetic_names


def test_names_are_distinct_a_prefix_stream_and_start_with_the_roster() -> None:
    names = synthetic_names(CAPACITY)
    assert len(set(names)) == len({safe_name(n) for n in names}) == CAPACITY == 3600
    assert names[: len(ROSTER)] == list(ROSTER)
    assert synthetic_names(48) == names[:48] and synthetic_names(0) == []
    assert names[60:62] == ["Avery Moreno", "Blake Lindqvist"]  # round 1 pairs first name j with last name j + 1


@pytest.mark.parametrize("count", [-1, CAPACITY + 1])
def test_a_count_beyond_the_names_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match=f"{count} synthetic people asked for; the sandbox names at most 3600"):
        synthetic_names(count)
