"""Image validation: every way a download can be unusable gets its own reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.crawl.validate import ImageLimits, ImageRejected, sniff_format, validate_image
from pipeline.sandbox.faults import bomb_png


def png(width: int = 80, height: int = 60) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(width, height) // 3, (40, 180, 220), -1)
    return cv2.imencode(".png", image)[1].tobytes()


def jpeg() -> bytes:
    return cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


def test_valid_png_and_jpeg() -> None:
    image = validate_image(png(), "image/png", ImageLimits())
    assert (image.ext, image.width, image.height, len(image.sha256)) == ("png", 80, 60, 64)
    assert validate_image(jpeg(), None, ImageLimits()).ext == "jpg"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"


@pytest.mark.parametrize(
    ("data", "content_type", "limits", "reason"),
    [
        (png(), "text/html; charset=utf-8", ImageLimits(), "wrong_content_type"),
        (b"", "image/png", ImageLimits(), "empty"),
        (b"<html>not found</html>", "image/png", ImageLimits(), "not_an_image"),
        (png()[: len(png()) // 2], "image/png", ImageLimits(), "corrupt"),
        (png()[:30] + b"\x00" * 200 + png()[230:], "image/png", ImageLimits(), "corrupt"),
        (jpeg()[:-200], "image/jpeg", ImageLimits(), "corrupt"),
        (bomb_png(30_000, 30_000), "image/png", ImageLimits(max_pixels=40_000_000), "too_many_pixels"),
        (png(40, 30), "image/png", ImageLimits(min_side=64), "too_small"),
        (png(), "image/png", ImageLimits(max_bytes=100), "too_large"),
        (b"GIF89a" + bytes(40), "image/gif", ImageLimits(formats=frozenset({"png"})), "unsupported_format"),
    ],
)
def test_rejects_with_reason(data: bytes, content_type: str, limits: ImageLimits, reason: str) -> None:
    with pytest.raises(ImageRejected) as info:
        validate_image(data, content_type, limits)
    assert info.value.reason == reason
