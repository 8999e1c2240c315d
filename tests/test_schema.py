"""The shared vocabulary: one reject status, every reason listed once, and manifests that keep to it."""

from __future__ import annotations

import pytest

from pipeline.core import schema
from pipeline.faces.align import REJECT_REASONS


def test_every_reason_a_stage_can_write_is_in_the_vocabulary() -> None:
    assert set(REJECT_REASONS) <= set(schema.REASONS), "add align's new reasons to pipeline/core/schema.py"
    assert set(schema.REASONS) >= schema.RETRIED_REASONS
    assert schema.is_reason("http_503") and schema.is_reason("http_404") and not schema.is_reason("http_5xx")


@pytest.mark.parametrize(
    ("row", "ok"),
    [
        ({"status": "ok", "reason": ""}, True),
        ({"status": "rejected", "reason": "no_face"}, True),
        ({"status": "rejected", "reason": "http_429"}, True),
        ({"status": "failed", "reason": "http_404"}, False),  # the second word for the same thing is gone
        ({"status": "rejected", "reason": "made_up"}, False),
        ({"status": "rejected", "reason": ""}, False),
        ({"status": "ok", "reason": "blurry"}, False),
    ],
)
def test_check_rows_accepts_only_the_vocabulary(row: dict[str, str], ok: bool) -> None:
    if ok:
        schema.check_rows([row], "m.parquet")
    else:
        with pytest.raises(ValueError, match=r"m.parquet: a row has status=.*pipeline/core/schema.py REASONS"):
            schema.check_rows([row], "m.parquet")
