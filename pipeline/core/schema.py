"""What manifests share, defined once: the trait columns, the status words and every reject reason."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.core import traits

# The ground truth of an avatar or a synthetic identity: gender, style and every trait of the catalogue.
TRAIT_COLUMNS = ["gender", "style", *sorted(traits.TRAIT_KEYS)]

OK = "ok"
REJECTED = "rejected"  # the item is recorded, with a reason, and has no file
STATUSES = (OK, REJECTED)

# Every reason a manifest row can be rejected for, with what it means. A stage that learns a new way to reject an
# item adds one line here; writing a manifest with a reason missing from this table is a bug and fails loudly.
REASONS: dict[str, str] = {
    # fetching (crawl_avatars, crawl_faces); `http_<status>` is also a reason: the server answered that status
    "timeout": "no complete answer within timeout_s, after every retry",
    "truncated": "the body ended before its Content-Length, after every retry",
    "connection_error": "no connection could be made, after every retry",
    "http_error": "the HTTP client failed in another way, after every retry",
    "bad_url": "the URL is not a valid http(s) URL",
    # validating downloaded bytes
    "wrong_content_type": "the server said the body is not an image (an HTML error page, JSON)",
    "empty": "the body is empty",
    "too_large": "more bytes than max_bytes",
    "not_an_image": "the first bytes are no image format",
    "unsupported_format": "an image format the stage does not keep",
    "too_many_pixels": "more pixels than max_pixels (checked from the header, before decoding)",
    "corrupt": "the image does not decode completely",
    "too_small": "a side below min_size (crawls)",
    # the face crawl
    "duplicate": "the same bytes as a better-ranked candidate",
    "near_duplicate": "within near_duplicate_distance dHash bits of a better-ranked photo of the same identity",
    "not_downloaded": "the search listed the photo but no downloader thread got to it",
    "search_unreachable": "a search result page got no answer at all",
    "search_error": "a search result page answered with an error (its words are in `detail`)",
    "search_unparsed": "a search result page answered in a format the engine's parser cannot read",
    "disk_full": "the disk filled up before the item was written",
    "internal_error": "a bug; `detail` has the exception",
    # align
    "missing_file": "the raw file named by the crawl manifest is gone",
    "decode_error": "the raw file does not decode",
    "no_face": "no frontal face of at least min_face found upright or at the tried rotations",
    "profile": "only the profile cascade fires: a face seen from the side",
    "not_a_face": "the frontal cascade fired, but verification turned every box down (alt2 votes, skin, eyes)",
    "multiple_faces": "more than one face, and multiple_faces says reject (or none dominates)",
    "blurry": "the face patch's Laplacian variance is below blur_threshold",
    "no_eyes": "eyes_required and the eye cascades missed an eye",
}
# Reasons that describe a moment's trouble rather than the item: a stage tries these items again on every run.
RETRIED_REASONS = frozenset({"missing_file", "decode_error", "disk_full", "internal_error", "not_downloaded"})
_HTTP_REASON = re.compile(r"http_[1-5]\d\d")


def is_reason(reason: str) -> bool:
    """True for a reason in the vocabulary (or an `http_<status>`)."""
    return reason in REASONS or _HTTP_REASON.fullmatch(reason) is not None


def check_rows(rows: Iterable[Mapping[str, Any]], where: str) -> None:
    """Every row has a known status; a rejected row has a known reason, an ok row none.

    Raises:
        ValueError: naming `where`, the row's status and reason, and where the vocabulary lives.
    """
    for row in rows:
        status, reason = row.get("status"), str(row.get("reason") or "")
        if status == OK and not reason:
            continue
        if status == REJECTED and is_reason(reason):
            continue
        raise ValueError(
            f"{where}: a row has status={status!r} reason={reason!r}; statuses are {STATUSES} and every reject "
            "reason must be listed in pipeline/core/schema.py REASONS"
        )
